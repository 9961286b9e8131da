package wechat

import "strings"

// Message is a body WeChat or WeCom posts, as the server reads it: a text message, an
// event, the encrypted envelope around either, or a message of another type (image,
// voice, …) with only the fields below; or a passive reply, plain or encrypted, for
// clients that check a server's answer. Message.Parse fills it as the table elements says.
//
// Each []byte field holds the character data of the element it is named for (CDATA
// sections and entity references resolved, line endings normalised to "\n", nothing
// trimmed), and is nil when the element was absent. The values alias the parsed input
// when an element's text is a single run without entity references or carriage returns
// (the form WeChat sends), and otherwise alias scratch space inside the Message. Either
// way they stay valid only until the next Parse or Reset and only while the input is not
// modified; copy what must outlive the request. Each value is capped (cap == len), so
// appending to one never overwrites its neighbours.
//
// A Message may be reused, and should be: after the first few messages Parse allocates
// nothing. A Message is not safe for concurrent use; give each goroutine its own.
type Message struct {
	ToUserName   []byte // the account (gh_… or CorpID); of a reply, the user
	FromUserName []byte // the sender's OpenID (WeCom: UserID)
	CreateTime   int64  // Unix seconds; 0 when absent
	MsgType      []byte // text, event, image, voice, video, shortvideo, location, link, …
	MsgID        []byte // <MsgId>, or <MsgID> as WeCom spells it: the message id, as text
	Content      []byte // the text of a text message or reply
	Event        []byte // of an event: subscribe, unsubscribe, SCAN, CLICK, …
	EventKey     []byte // of an event: a menu key, or the scene ("qrscene_…") of a QR code
	Encrypt      []byte // the ciphertext of safe and compatible mode
	MsgSignature []byte // of an encrypted reply
	TimeStamp    []byte // of an encrypted reply
	Nonce        []byte // of an encrypted reply

	scratch []byte // text that had to be rewritten (entities, CRLF, several pieces)
}

// Caps of the identifier fields (SPEC section 9), far above WeChat's own values (an OpenID
// has 28 bytes, a MsgId 64 bits). Message.Parse refuses a longer value with
// ErrFieldTooLong, so a caller may keep or hash these fields knowing their size.
const (
	// MaxUserNameBytes caps ToUserName and FromUserName.
	MaxUserNameBytes = 128
	// MaxMsgIDDigits caps MsgId, which must also be decimal digits only.
	MaxMsgIDDigits = 20
	// MaxEventBytes caps Event and EventKey.
	MaxEventBytes = 256
)

// element is a child of <xml> that Message has a field for.
type element struct {
	name, alias string                 // its name, and another spelling of it ("" if none)
	bytes       func(*Message) *[]byte // the field that holds its text
	int         func(*Message) *int64  // or the field that holds it as a number
	max         int                    // the most bytes its text may have; 0: only the body bounds it
	digits      bool                   // its text must be decimal digits
	envelope    bool                   // ParseEnvelope reads it
}

// elements is the one list of what Message models: Parse looks each child of <xml> up in
// it, checks the caps it gives and stores through it, and the tests iterate it. Adding a
// field is a line here besides the one in Message; Reset needs none.
var elements = [...]element{
	{name: "ToUserName", bytes: func(m *Message) *[]byte { return &m.ToUserName }, max: MaxUserNameBytes, envelope: true},
	{name: "FromUserName", bytes: func(m *Message) *[]byte { return &m.FromUserName }, max: MaxUserNameBytes},
	{name: "CreateTime", int: func(m *Message) *int64 { return &m.CreateTime }},
	{name: "MsgType", bytes: func(m *Message) *[]byte { return &m.MsgType }},
	{name: "MsgId", alias: "MsgID", bytes: func(m *Message) *[]byte { return &m.MsgID }, max: MaxMsgIDDigits, digits: true},
	{name: "Content", bytes: func(m *Message) *[]byte { return &m.Content }},
	{name: "Event", bytes: func(m *Message) *[]byte { return &m.Event }, max: MaxEventBytes},
	{name: "EventKey", bytes: func(m *Message) *[]byte { return &m.EventKey }, max: MaxEventBytes},
	{name: "Encrypt", bytes: func(m *Message) *[]byte { return &m.Encrypt }, envelope: true},
	{name: "MsgSignature", bytes: func(m *Message) *[]byte { return &m.MsgSignature }},
	{name: "TimeStamp", bytes: func(m *Message) *[]byte { return &m.TimeStamp }},
	{name: "Nonce", bytes: func(m *Message) *[]byte { return &m.Nonce }},
}

var _ [64 - len(elements)]struct{} // the parser keeps the elements it has seen as bits of a uint64

// lookup returns the index in elements of the child of <xml> named name, or -1. Names
// compare case-sensitively, as XML names do.
func lookup(name []byte) int {
	for i := range elements {
		if e := &elements[i]; string(name) == e.name || string(name) == e.alias { // name is never ""
			return i
		}
	}
	return -1
}

// maxKeptScratch is the most scratch space Reset keeps: far more than a WeChat message
// needs, so that a Message kept for reuse does not hold on to what an odd document grew.
const maxKeptScratch = 16 << 10

// Reset clears every field, keeping the scratch space for the next Parse (up to a limit).
func (m *Message) Reset() {
	scratch := m.scratch[:0]
	if cap(scratch) > maxKeptScratch {
		scratch = nil
	}
	*m = Message{scratch: scratch}
}

// Parse resets m and fills it from the XML document data. Elements Message has no field
// for are skipped, whatever they contain: an image message, or an event of a new type,
// parses as a generic message with its MsgType (and Event and EventKey). Parse returns an
// error wrapping ErrMalformed, with the byte offset of the problem, unless data is a
// well-formed document with a root element named xml (after an optional byte order mark,
// XML declaration, comments and white space), with no DOCTYPE (WeChat never sends one, and
// refusing it rules out entity expansion), no character XML forbids anywhere (NUL and the
// other control characters but tab, line feed and carriage return; U+FFFE, U+FFFF; invalid
// UTF-8) and no field given twice (two <FromUserName>, or <MsgId> and <MsgID>: which would
// count?); and one wrapping ErrFieldTooLong for an identifier over its cap
// (MaxUserNameBytes, MaxMsgIDDigits, MaxEventBytes). It never panics. See Message for how
// long the fields stay valid.
func (m *Message) Parse(data []byte) error {
	p := parser{data: data, m: m}
	return p.parse()
}

// ParseEnvelope is Parse restricted to the envelope of an encrypted message: it fills only
// ToUserName and Encrypt and skips every other element unread (WeCom's AgentID among
// them), so that a server reads nothing else of a body before it has checked the
// msg_signature over its Encrypt. The document is checked as by Parse (well-formed, no
// forbidden character, no envelope field twice, ToUserName within its cap), with the same
// errors.
func (m *Message) ParseEnvelope(data []byte) error {
	p := parser{data: data, m: m, envelope: true}
	return p.parse()
}

// IsType reports whether the message type is t, ignoring ASCII case and surrounding white
// space.
func (m *Message) IsType(t string) bool {
	return asciiEqualFold(trimSpace(m.MsgType), t)
}

// IsEvent reports whether m is an event named name, ignoring ASCII case and surrounding
// white space: WeChat sends "subscribe" but "SCAN" and "LOCATION", and has changed case
// before.
func (m *Message) IsEvent(name string) bool {
	return m.IsType("event") && asciiEqualFold(trimSpace(m.Event), name)
}

// asciiEqualFold reports whether b equals s ignoring ASCII case. s is ASCII: then bytes of
// b and s in equal number fold to each other, as strings.EqualFold has it, only when they
// are ASCII, and the conversion of b stays on the stack.
func asciiEqualFold(b []byte, s string) bool {
	return len(b) == len(s) && strings.EqualFold(string(b), s)
}
