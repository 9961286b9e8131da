package wechat

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// maxDepth bounds element nesting. WeChat nests four deep (<xml><SendPicsInfo><PicList>
// <item><PicMd5Sum>, which Parse skips); anything far deeper is not a WeChat message, and
// a fixed bound keeps the parser's element stack off the heap.
const maxDepth = 32

// frame is an open element: data[nameStart:nameEnd] is its name, el its index in elements
// when its text is a field (a child of <xml> that Message models), and -1 otherwise.
type frame struct{ nameStart, nameEnd, el int }

// parser reads one document into a Message. It lives on Parse's stack: the element stack
// is a fixed array and values are recorded as offsets, so parsing allocates only when the
// Message's scratch space must grow.
type parser struct {
	data     []byte
	pos      int
	m        *Message
	envelope bool // ParseEnvelope: read only the envelope's fields
	root     bool // the root element has been opened
	depth    int
	stack    [maxDepth]frame
	seen     uint64 // bit i is set once elements[i] has been read

	// The value of the field being read, whose text may come in pieces (text, CDATA,
	// text again, split by comments or skipped elements): the first clean piece is kept
	// by offset; only a second piece, an entity or a carriage return moves it to scratch.
	pieces               int
	aliasStart, aliasEnd int
	scratchStart         int // -1 while the value is an alias of data
}

func (p *parser) errorf(at int, format string, args ...any) error {
	return fmt.Errorf("%w: %s at byte %d", ErrMalformed, fmt.Sprintf(format, args...), at)
}

// parse resets the Message and fills it from the document.
func (p *parser) parse() error {
	p.m.Reset()
	if i := badChar(p.data); i >= 0 {
		return p.errorf(i, "character XML does not allow (NUL, control character or invalid UTF-8)")
	}
	if bytes.HasPrefix(p.data, []byte("\xef\xbb\xbf")) {
		p.pos = 3
	}
	for p.pos < len(p.data) {
		if err := p.step(); err != nil {
			return err
		}
	}
	if p.depth > 0 {
		return p.errorf(p.pos, "unexpected end of input: %d elements not closed", p.depth)
	}
	if !p.root {
		return p.errorf(p.pos, "no root element")
	}
	return nil
}

// step reads the text or markup at p.pos and hands it to text, open or close; comments
// and processing instructions are skipped.
func (p *parser) step() error {
	d, i := p.data, p.pos
	if d[i] != '<' {
		j := bytes.IndexByte(d[i:], '<')
		if j < 0 {
			j = len(d) - i
		}
		p.pos = i + j
		return p.text(i, i+j, false)
	}
	if i+1 >= len(d) {
		return p.errorf(i, "unexpected end of input after <")
	}
	switch d[i+1] {
	case '/':
		s := i + 2
		e := nameEnd(d, s)
		if e == s {
			return p.errorf(i, "end tag without a name")
		}
		k := skipSpace(d, e)
		if k >= len(d) || d[k] != '>' {
			return p.errorf(i, "unterminated end tag")
		}
		p.pos = k + 1
		return p.close(i, s, e)
	case '?':
		j := bytes.Index(d[i+2:], []byte("?>"))
		if j < 0 {
			return p.errorf(i, "unterminated processing instruction")
		}
		p.pos = i + 2 + j + 2
		return nil
	case '!':
		if bytes.HasPrefix(d[i:], []byte("<!--")) {
			j := bytes.Index(d[i+4:], []byte("-->"))
			if j < 0 {
				return p.errorf(i, "unterminated comment")
			}
			p.pos = i + 4 + j + 3
			return nil
		}
		if bytes.HasPrefix(d[i:], []byte("<![CDATA[")) {
			s := i + len("<![CDATA[")
			j := bytes.Index(d[s:], []byte("]]>"))
			if j < 0 {
				return p.errorf(i, "unterminated CDATA section")
			}
			p.pos = s + j + 3
			return p.text(s, s+j, true)
		}
		return p.errorf(i, "DOCTYPE and other declarations are not accepted")
	}
	s := i + 1
	e := nameEnd(d, s)
	if e == s {
		return p.errorf(i, "expected an element name after <")
	}
	// Attributes are checked for form and skipped: WeChat sends none that matter.
	k := e
	for {
		sp := k
		k = skipSpace(d, k)
		if k >= len(d) {
			return p.errorf(i, "unterminated start tag")
		}
		switch d[k] {
		case '>':
			p.pos = k + 1
			return p.open(i, s, e, false)
		case '/':
			if k+1 < len(d) && d[k+1] == '>' {
				p.pos = k + 2
				return p.open(i, s, e, true)
			}
			return p.errorf(k, "expected > after / in a start tag")
		}
		an := nameEnd(d, k)
		if k == sp || an == k {
			return p.errorf(k, "malformed attribute")
		}
		k = skipSpace(d, an)
		if k >= len(d) || d[k] != '=' {
			return p.errorf(k, "attribute without a value")
		}
		k = skipSpace(d, k+1)
		if k >= len(d) || (d[k] != '"' && d[k] != '\'') {
			return p.errorf(k, "attribute value not quoted")
		}
		j := bytes.IndexByte(d[k+1:], d[k])
		if j < 0 {
			return p.errorf(k, "unterminated attribute value")
		}
		k += 1 + j + 1
	}
}

// open handles the start tag at byte at of the element data[s:e]: the root, once, or
// inside it an element, which is looked up only if it is a child of <xml>. The children
// of a field are skipped, as encoding/xml does, and so is all an unknown element holds.
func (p *parser) open(at, s, e int, selfClosing bool) error {
	name, el := p.data[s:e], -1
	switch {
	case p.depth == 0 && p.root:
		return p.errorf(at, "markup after the root element")
	case p.depth == 0 && string(name) != "xml":
		return p.errorf(at, "root element is %q, want \"xml\"", clip(name))
	case p.depth == 0:
		p.root = true
	case p.depth == 1:
		if el = lookup(name); el >= 0 && p.envelope && !elements[el].envelope {
			el = -1
		}
	}
	if el >= 0 {
		if p.seen&(1<<el) != 0 {
			return p.errorf(at, "element <%s> repeats a field given before", clip(name))
		}
		p.seen |= 1 << el
		if selfClosing {
			return p.set(at, name, el, p.data[at:at:at])
		}
	}
	if selfClosing {
		return nil
	}
	if p.depth == maxDepth {
		return p.errorf(at, "elements nested more than %d deep", maxDepth)
	}
	p.stack[p.depth] = frame{nameStart: s, nameEnd: e, el: el}
	p.depth++
	if el >= 0 {
		p.pieces, p.scratchStart = 0, -1
	}
	return nil
}

// close handles the end tag at byte at of the element named data[s:e], storing the value
// of a field.
func (p *parser) close(at, s, e int) error {
	if p.depth == 0 {
		return p.errorf(at, "end tag %q outside the root element", clip(p.data[s:e]))
	}
	top := &p.stack[p.depth-1]
	name := p.data[top.nameStart:top.nameEnd]
	if !bytes.Equal(name, p.data[s:e]) {
		return p.errorf(at, "end tag %q closes element %q", clip(p.data[s:e]), clip(name))
	}
	p.depth--
	if top.el < 0 {
		return nil
	}
	var v []byte
	switch {
	case p.scratchStart >= 0:
		s := p.m.scratch
		v = s[p.scratchStart:len(s):len(s)]
	case p.pieces == 1:
		v = p.data[p.aliasStart:p.aliasEnd:p.aliasEnd]
	default:
		v = p.data[at:at:at] // empty, but not nil: the element was there
	}
	return p.set(at, name, top.el, v)
}

// set checks the value v of elements[el], named name, that ends at byte at against the
// element's caps, and stores it.
func (p *parser) set(at int, name []byte, el int, v []byte) error {
	e := &elements[el]
	if e.max > 0 && len(v) > e.max {
		return fmt.Errorf("%w: <%s> has %d bytes, at most %d allowed, at byte %d",
			ErrFieldTooLong, clip(name), len(v), e.max, at)
	}
	if e.digits && !allDigits(v) {
		return p.errorf(at, "<%s> %q is not a decimal number", clip(name), clip(v))
	}
	if e.int == nil {
		*e.bytes(p.m) = v
		return nil
	}
	n, ok := parseInt(v)
	if !ok {
		return p.errorf(at, "<%s> %q is not an integer", clip(name), clip(v))
	}
	*e.int(p.m) = n
	return nil
}

// text checks the character data data[s:e] (a CDATA section's if cdata), only white space
// outside the root, and adds it to the value of the field whose element it is directly in.
func (p *parser) text(s, e int, cdata bool) error {
	d := p.data[s:e]
	if p.depth == 0 && (cdata || len(trimSpace(d)) != 0) {
		return p.errorf(s, "text outside the root element")
	}
	clean := true
	if cdata {
		clean = bytes.IndexByte(d, '\r') < 0
	} else {
		for i := 0; i < len(d); i++ {
			switch d[i] {
			case '&':
				n, _, ok := entity(d[i:])
				if !ok {
					return p.errorf(s+i, "invalid entity or character reference")
				}
				clean, i = false, i+n-1
			case '\r':
				clean = false
			case ']':
				if i+2 < len(d) && d[i+1] == ']' && d[i+2] == '>' {
					return p.errorf(s+i, "]]> outside a CDATA section")
				}
			}
		}
	}
	if p.depth == 0 || p.stack[p.depth-1].el < 0 || len(d) == 0 {
		return nil
	}
	if p.pieces == 0 && clean {
		p.pieces, p.aliasStart, p.aliasEnd = 1, s, e
		return nil
	}
	m := p.m
	if p.scratchStart < 0 {
		p.scratchStart = len(m.scratch)
		if p.pieces > 0 {
			m.scratch = append(m.scratch, p.data[p.aliasStart:p.aliasEnd]...)
		}
	}
	p.pieces++
	m.scratch = appendText(m.scratch, d, cdata)
	return nil
}

// appendText appends checked character data to dst the way an XML processor reports it:
// "\r\n" and a lone "\r" become "\n" and, outside CDATA, references are replaced by the
// characters they stand for. (A carriage return written as &#13; stays one.)
func appendText(dst, d []byte, cdata bool) []byte {
	for i := 0; i < len(d); i++ {
		switch c := d[i]; {
		case c == '\r':
			dst = append(dst, '\n')
			if i+1 < len(d) && d[i+1] == '\n' {
				i++
			}
		case c == '&' && !cdata:
			n, r, _ := entity(d[i:]) // checked by parser.text
			dst = utf8.AppendRune(dst, r)
			i += n - 1
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// entity decodes the reference at the start of d ("&lt;", "&#20013;", "&#x4e2d;", …),
// returning its length and the character. Only the five predefined entities are known,
// and a character reference must name a character XML allows.
func entity(d []byte) (n int, r rune, ok bool) {
	end := bytes.IndexByte(d, ';')
	if end < 2 {
		return 0, 0, false
	}
	ref := d[1:end]
	if r, ok := predefined[string(ref)]; ok {
		return end + 1, r, true
	}
	if ref[0] != '#' || len(ref) == 1 {
		return 0, 0, false
	}
	digits, base := ref[1:], 10
	if digits[0] == 'x' {
		digits, base = digits[1:], 16
	}
	v, err := strconv.ParseUint(string(digits), base, 32) // no sign, prefix or "_" in bases 10 and 16
	if err != nil || !isXMLChar(rune(v)) {
		return 0, 0, false
	}
	return end + 1, rune(v), true
}

// predefined holds the five entities XML predefines.
var predefined = map[string]rune{"lt": '<', "gt": '>', "amp": '&', "apos": '\'', "quot": '"'}

// nameEnd returns the end of the XML name starting at d[s:], or s if there is none. Like
// encoding/xml it takes any non-ASCII byte as part of a name.
func nameEnd(d []byte, s int) int {
	i := s
	for i < len(d) && nameBytes[d[i]] {
		i++
	}
	if i > s && (d[s] == '-' || d[s] == '.' || ('0' <= d[s] && d[s] <= '9')) {
		return s // not a valid first character
	}
	return i
}

// nameBytes marks the bytes that may be part of a name: ASCII letters, digits, "_:.-"
// and, as encoding/xml has it, every non-ASCII byte.
var nameBytes = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '_' || c == ':' || c == '.' || c == '-' || c >= utf8.RuneSelf
	}
	return t
}()

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(d []byte, i int) int {
	for i < len(d) && isSpace(d[i]) {
		i++
	}
	return i
}

func trimSpace(b []byte) []byte {
	b = b[skipSpace(b, 0):]
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// badChar returns the offset of the first byte of d that does not start a character XML
// 1.0 allows, encoded as valid UTF-8 — NUL and the other control characters but tab, line
// feed and carriage return, U+FFFE, U+FFFF, surrogates, invalid or overlong sequences — or
// -1 when there is none. Eight bytes at a time are skipped while they are all printable
// ASCII, as most of a WeChat message is.
func badChar(d []byte) int {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	i := 0
	for i < len(d) {
		if i+8 <= len(d) {
			x := binary.LittleEndian.Uint64(d[i:])
			// A byte below 0x20 or at or above 0x80 sets its high bit in one of the two
			// terms; otherwise all eight are printable ASCII.
			if (x-0x20*ones)&^x&highs == 0 && x&highs == 0 {
				i += 8
				continue
			}
		}
		c := d[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
				return i
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(d[i:])
		if r == utf8.RuneError && n == 1 || !isXMLChar(r) {
			return i
		}
		i += n
	}
	return -1
}

// allDigits reports whether b is all ASCII decimal digits (true when b is empty).
func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// isXMLChar reports whether XML 1.0 allows r in a document.
func isXMLChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		0x20 <= r && r <= 0xD7FF ||
		0xE000 <= r && r <= 0xFFFD ||
		0x10000 <= r && r <= 0x10FFFF
}

// parseInt parses a decimal integer with optional sign and surrounding white space; an
// empty value is 0, as encoding/xml has it. The number means nothing unless ok.
func parseInt(b []byte) (n int64, ok bool) {
	if b = trimSpace(b); len(b) == 0 {
		return 0, true
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	return n, err == nil
}

// clip shortens b for an error message.
func clip(b []byte) string {
	if len(b) > 32 {
		return string(b[:32]) + "…"
	}
	return string(b)
}
