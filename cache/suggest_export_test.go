package cache

// Suggester exposes the suggester to the package's external benchmarks (package cache_test),
// which need store's demo keys (store imports cache).
type Suggester struct{ s *suggester }

// NewSuggester returns an empty Suggester.
func NewSuggester() Suggester { return Suggester{newSuggester()} }

// Add is suggester.add.
func (s Suggester) Add(normKey string) { s.s.add(normKey) }

// Remove is suggester.remove.
func (s Suggester) Remove(normKey string) { s.s.remove(normKey) }

// Suggest is suggester.suggest.
func (s Suggester) Suggest(dst []string, query []byte, limit int) []string {
	return s.s.suggest(dst, query, limit)
}

// Bytes is suggester.bytes.
func (s Suggester) Bytes() int64 { return s.s.bytes() }

// Len is suggester.len.
func (s Suggester) Len() int { return s.s.len() }

// SuggestBytes is the bytes of the cache's suggester (0 after Close).
func (c *Cache) SuggestBytes() int64 {
	t := c.acquire(0)
	if t == nil {
		return 0
	}
	defer t.release(0)
	return t.sugg.bytes()
}
