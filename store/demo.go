package store

import (
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
)

// DemoKey and DemoLocation are demo row 0, the workpiece of the SPEC's example reply
// `[18-546]的工作台位为[车体新厂房3号]`. Row 1, A7-001, has a letter for trying case
// folding (`?a7-001`).
const (
	DemoKey      = "18-546"
	DemoLocation = "车体新厂房3号"
)

// demoSpan is the range over which DemoRow scrambles its keys: a permutation of
// [0, demoSpan) so the first rows look varied; beyond it keys are unscrambled.
const demoSpan = 1_000_000

var (
	demoSeries    = "BCDFGHKMPT" // series letters; never A, so no key collides with A7-001
	demoBuildings = []string{
		"车体新厂房", "总装车间", "焊装车间", "涂装车间", "冲压车间",
		"机加工车间", "发动机车间", "物流中心", "成品库", "备件库",
	}
)

// DemoRow returns row i of the demo data: a unique workpiece number and a plant location in
// Chinese. It is deterministic, and the one definition of the demo data: Seed inserts
// DemoRow(0..n-1) and examples/locations.csv holds the first 1,000. Row 0 is
// 18-546 → 车体新厂房3号 and row 1 is A7-001; the others are like T72-104 → 车体新厂房23号货架第3层.
// Keys are unique for every i ≥ 0, also under case and width folding.
// DemoRow is safe for concurrent use.
func DemoRow(i int) (key, location string) {
	switch i {
	case 0:
		return DemoKey, DemoLocation
	case 1:
		return "A7-001", "总装车间A区12排"
	}
	return demoKey(i - 2), demoLocation(uint64(i))
}

// demoKey returns the key of demo row j+2: letter, two-digit series, dash, number. x is a
// bijection of j, so keys are unique: (x%10, x/10%100, x/1000) identifies x.
func demoKey(j int) string {
	x := j
	if j < demoSpan {
		x = int((uint64(j)*392837 + 104729) % demoSpan) // 392837 is coprime to 10⁶: a permutation
	}
	b := make([]byte, 0, 12)
	b = append(b, demoSeries[x%10])
	s := x / 10 % 100
	b = append(b, byte('0'+s/10), byte('0'+s%10), '-')
	n := x / 1000
	if n < 100 {
		b = append(b, '0')
	}
	if n < 10 {
		b = append(b, '0')
	}
	return string(strconv.AppendInt(b, int64(n), 10))
}

// demoLocation returns a plausible location for row i, chosen by a hash of i.
func demoLocation(i uint64) string {
	h := splitmix64(i)
	building := demoBuildings[h%uint64(len(demoBuildings))]
	h /= uint64(len(demoBuildings))
	switch h % 4 {
	case 0:
		return fmt.Sprintf("%s%d号", building, 1+h/4%12)
	case 1:
		return fmt.Sprintf("%s%c区%d排", building, 'A'+rune(h/4%6), 1+h/24%30)
	case 2:
		return fmt.Sprintf("%s%d号工位", building, 1+h/4%80)
	default:
		return fmt.Sprintf("%s%d号货架第%d层", building, 1+h/4%40, 1+h/160%5)
	}
}

// splitmix64 is a small, well-mixing hash (Steele, Lea and Flood), here for spreading demo
// rows over locations deterministically.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// WriteDemoCSV writes the first n demo rows as CSV with the header "part_no,location" (the
// default mapping's columns): the content of examples/locations.csv for n = 1000.
func WriteDemoCSV(w io.Writer, n int) error {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{DefaultKeyColumn, DefaultValueColumn}); err != nil {
		return fmt.Errorf("store: write demo csv: %w", err)
	}
	for i := range n {
		k, v := DemoRow(i)
		if err := cw.Write([]string{k, v}); err != nil {
			return fmt.Errorf("store: write demo csv: %w", err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("store: write demo csv: %w", err)
	}
	return nil
}
