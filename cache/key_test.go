package cache

import (
	"testing"
	"unicode/utf8"
)

func TestAppendKey(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"ascii", "18-546", "18-546"},
		{"upper", "A7-001", "a7-001"},
		{"lower stays", "a7-001", "a7-001"},
		{"trim", " \t18-546\r\n", "18-546"},
		{"ideographic space", "\u300018-546\u3000", "18-546"},
		{"full-width digits", "１８－５４６", "18-546"},
		{"full-width letters", "Ａ７－００１", "a7-001"},
		{"full-width lower", "ａ７", "a7"},
		{"circled digit (nfkc)", "①8-546", "18-546"},
		{"kelvin sign", "\u212A9", "k9"},
		{"chinese kept", "车体3号", "车体3号"},
		{"empty", "", ""},
		{"only space", " \u3000 ", ""},
		{"roman numeral", "Ⅻ-1", "xii-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(AppendKey(nil, []byte(tt.in))); got != tt.want {
				t.Errorf("AppendKey(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if got := Key(tt.in); got != tt.want {
				t.Errorf("Key(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestAppendKeyKeepsPrefix(t *testing.T) {
	got := string(AppendKey([]byte("x|"), []byte(" Ａb ")))
	if want := "x|ab"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	got = string(AppendKey([]byte("x|"), []byte("Ａ①")))
	if want := "x|a1"; got != want {
		t.Fatalf("slow path: got %q, want %q", got, want)
	}
}

func TestAppendKeyNoAllocs(t *testing.T) {
	buf := make([]byte, 0, 64)
	in := []byte(" ？Ａ７－００１ ")[4:] // a full-width key
	if n := testing.AllocsPerRun(100, func() { buf = AppendKey(buf[:0], in) }); n != 0 {
		t.Fatalf("AppendKey allocates %v times per call, want 0", n)
	}
}

// FuzzAppendKey checks that normalisation is idempotent on valid UTF-8: a normalised database key must find itself.
func FuzzAppendKey(f *testing.F) {
	for _, s := range []string{"18-546", "Ａ７－００１", "①", " x ", "\u3000", "ǅ", "ﬁ", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		once := AppendKey(nil, []byte(s))
		twice := AppendKey(nil, once)
		if !utf8.ValidString(s) {
			return
		}
		if string(once) != string(twice) {
			t.Fatalf("not idempotent: %q -> %q -> %q", s, once, twice)
		}
	})
}

func BenchmarkAppendKey(b *testing.B) {
	for _, bm := range []struct{ name, in string }{
		{"ascii", "18-546"},
		{"fullwidth", "１８－５４６"},
		{"nfkc", "①8-546"},
	} {
		b.Run(bm.name, func(b *testing.B) {
			in := []byte(bm.in)
			buf := make([]byte, 0, 64)
			b.ReportAllocs()
			for b.Loop() {
				buf = AppendKey(buf[:0], in)
			}
		})
	}
}
