package wechat

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Message is a message WeChat or WeCom posts to the developer server — a user message, an
// event, or the encrypted envelope around either — and also a passive reply, for clients
// that check what a server answered. Message.Parse fills it.
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
	ToUserName   []byte // <ToUserName>: the account (gh_… or CorpID) on inbound messages
	FromUserName []byte // <FromUserName>: the sender's OpenID (WeCom: UserID)
	CreateTime   int64  // <CreateTime>: Unix seconds; 0 when absent
	MsgType      []byte // <MsgType>: text, image, voice, video, shortvideo, location, link, event, …
	MsgID        []byte // <MsgId>, or <MsgID> as WeCom spells it: the message id, as text

	Content []byte // <Content> of a text message (and of a text reply)

	PicURL       []byte // <PicUrl> of an image message
	MediaID      []byte // <MediaId> of image, voice, video and shortvideo messages; of <Image>, <Voice> and <Video> in replies
	Format       []byte // <Format> of a voice message: amr, speex, …
	Recognition  []byte // <Recognition>: speech recognition result of a voice message
	ThumbMediaID []byte // <ThumbMediaId> of video and shortvideo messages; of <Music> in replies

	LocationX []byte // <Location_X>: latitude of a location message
	LocationY []byte // <Location_Y>: longitude of a location message
	Scale     []byte // <Scale>: map zoom of a location message
	Label     []byte // <Label>: place name of a location message

	Title       []byte // <Title> of a link message; of <Video> and <Music> in replies
	Description []byte // <Description> of a link message; of <Video> and <Music> in replies
	URL         []byte // <Url> of a link message

	Event    []byte // <Event>: subscribe, unsubscribe, SCAN, LOCATION, CLICK, VIEW, scancode_push, …
	EventKey []byte // <EventKey>: menu key, view URL, or "qrscene_…"/scene of a QR code
	Ticket   []byte // <Ticket> of a QR-code subscribe or SCAN event

	Latitude  []byte // <Latitude> of a LOCATION event
	Longitude []byte // <Longitude> of a LOCATION event
	Precision []byte // <Precision> of a LOCATION event

	MenuID []byte // <MenuId> of a VIEW or menu event (personalised menus)

	ScanType   []byte // <ScanCodeInfo><ScanType> of scancode_push and scancode_waitmsg events
	ScanResult []byte // <ScanCodeInfo><ScanResult> of scancode_push and scancode_waitmsg events

	PicCount int      // <SendPicsInfo><Count> of pic_sysphoto, pic_photo_or_album and pic_weixin events
	PicMD5s  [][]byte // one entry per <SendPicsInfo><PicList><item>: its <PicMd5Sum>, nil if it had none

	SendLocationX []byte // <SendLocationInfo><Location_X> of a location_select event
	SendLocationY []byte // <SendLocationInfo><Location_Y>
	SendScale     []byte // <SendLocationInfo><Scale>
	SendLabel     []byte // <SendLocationInfo><Label>
	SendPoiname   []byte // <SendLocationInfo><Poiname>

	AgentID []byte // <AgentID>: the WeCom application

	Encrypt      []byte // <Encrypt>: the ciphertext of safe and compatible mode
	MsgSignature []byte // <MsgSignature> of an encrypted reply
	TimeStamp    []byte // <TimeStamp> of an encrypted reply
	Nonce        []byte // <Nonce> of an encrypted reply

	MusicURL     []byte // <Music><MusicUrl> of a music reply
	HQMusicURL   []byte // <Music><HQMusicUrl> of a music reply
	ArticleCount int    // <ArticleCount> of a news reply (the articles themselves are not parsed)
	KfAccount    []byte // <TransInfo><KfAccount> of a transfer_customer_service reply

	scratch []byte // text that had to be rewritten (entities, CRLF, several pieces)
}

// Caps of the identifier fields (SPEC section 9). Message.Parse refuses a longer value
// with ErrFieldTooLong, so a caller may keep or hash these fields knowing their size.
// WeChat's own values are far shorter: an OpenID is 28 bytes, a gh_ account 15, a MsgId
// a 64-bit number.
const (
	// MaxUserNameBytes caps ToUserName and FromUserName.
	MaxUserNameBytes = 128
	// MaxMsgIDDigits caps MsgId, which must also be decimal digits only.
	MaxMsgIDDigits = 20
	// MaxEventBytes caps Event and EventKey.
	MaxEventBytes = 256
)

// maxDepth bounds element nesting. WeChat nests four deep (<xml><SendPicsInfo><PicList>
// <item><PicMd5Sum>); anything far deeper is not a WeChat message, and a fixed bound keeps
// the parser's element stack off the heap.
const maxDepth = 32

// Reset keeps at most this much of a Message's scratch space and picture list for the next
// Parse: far more than any message WeChat sends needs. More, grown by an unusual document,
// is let go, so that a Message kept for reuse does not hold a body's worth of memory.
const (
	maxKeptScratch  = 16 << 10
	maxKeptPictures = 64
)

// Reset clears every field, keeping the scratch space for the next Parse (up to a limit).
func (m *Message) Reset() {
	scratch := m.scratch[:0]
	if cap(scratch) > maxKeptScratch {
		scratch = nil
	}
	clear(m.PicMD5s) // drop references into the previous input
	pics := m.PicMD5s[:0]
	if cap(pics) > maxKeptPictures {
		pics = nil
	}
	*m = Message{scratch: scratch, PicMD5s: pics}
}

// Parse resets m and fills it from the XML document data. The document must be
// well-formed with a root element named xml; it may start with a byte order mark, an XML
// declaration, comments and white space. Elements Message has no field for are skipped,
// whatever they contain, so a new event type parses as a generic event with its Event
// and EventKey. A DOCTYPE is refused (WeChat never sends one, and refusing it rules out
// entity expansion), and so is a document with a character XML forbids anywhere in it
// (NUL and the other control characters but tab, line feed and carriage return; U+FFFE,
// U+FFFF; invalid UTF-8), or with a field given twice (two <FromUserName>, or <MsgId> and
// <MsgID>: which one would count?). Parse returns an error wrapping ErrMalformed, with the
// byte offset of the problem, for any of these, and one wrapping ErrFieldTooLong for an
// identifier over its cap (MaxUserNameBytes, MaxMsgIDDigits, MaxEventBytes); it never
// panics. See Message for how long the fields stay valid.
func (m *Message) Parse(data []byte) error {
	m.Reset()
	p := parser{data: data, m: m}
	return p.parse()
}

// ParseEnvelope is Parse restricted to the envelope of an encrypted message: it fills only
// ToUserName, Encrypt and AgentID, and skips every other element unread, as Parse skips
// elements it does not model. A server uses it to find the ciphertext whose msg_signature
// it must check before it reads anything else the body says. The document is checked as
// by Parse (well-formed, no forbidden character, no envelope field twice, ToUserName
// within its cap), with the same errors.
func (m *Message) ParseEnvelope(data []byte) error {
	m.Reset()
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

// SubscribeScene returns the scene of a subscribe event that came from a parametric QR
// code: eventKey without its "qrscene_" prefix. It returns eventKey unchanged when it has
// no such prefix (a SCAN event's EventKey is the bare scene already).
func SubscribeScene(eventKey []byte) []byte {
	const prefix = "qrscene_"
	if len(eventKey) >= len(prefix) && string(eventKey[:len(prefix)]) == prefix {
		return eventKey[len(prefix):]
	}
	return eventKey
}

// scope says what an open element is, which decides how its children are read.
type scope uint8

const (
	sIgnore           scope = iota // an element Message does not model, or inside one
	sLeaf                          // an element whose text is a field
	sRoot                          // <xml>
	sScanCodeInfo                  // <ScanCodeInfo>
	sSendPicsInfo                  // <SendPicsInfo>
	sPicList                       // <SendPicsInfo><PicList>
	sPicItem                       // <SendPicsInfo><PicList><item>
	sSendLocationInfo              // <SendLocationInfo>
	sMedia                         // <Image> or <Voice> of a reply
	sVideo                         // <Video> of a reply
	sMusic                         // <Music> of a reply
	sTransInfo                     // <TransInfo> of a reply
)

// field names the Message field a leaf element fills.
type field uint8

const (
	fNone field = iota
	fToUserName
	fFromUserName
	fCreateTime
	fMsgType
	fMsgID
	fContent
	fPicURL
	fMediaID
	fFormat
	fRecognition
	fThumbMediaID
	fLocationX
	fLocationY
	fScale
	fLabel
	fTitle
	fDescription
	fURL
	fEvent
	fEventKey
	fTicket
	fLatitude
	fLongitude
	fPrecision
	fMenuID
	fScanType
	fScanResult
	fPicCount
	fPicMD5
	fSendLocationX
	fSendLocationY
	fSendScale
	fSendLabel
	fSendPoiname
	fAgentID
	fEncrypt
	fMsgSignature
	fTimeStamp
	fNonce
	fMusicURL
	fHQMusicURL
	fArticleCount
	fKfAccount
	numFields
)

// The parser keeps the fields it has seen as bits of a uint64.
var _ [64 - numFields]struct{} // fails to compile when there are more than 64 fields

// limits holds the caps of SPEC section 9 by field: the most bytes a value may have, and
// whether it must be decimal digits. A field without an entry is bounded only by the
// document.
var limits = [numFields]struct {
	max    int
	digits bool
}{
	fToUserName:   {max: MaxUserNameBytes},
	fFromUserName: {max: MaxUserNameBytes},
	fMsgID:        {max: MaxMsgIDDigits, digits: true},
	fEvent:        {max: MaxEventBytes},
	fEventKey:     {max: MaxEventBytes},
}

// isEnvelopeField reports whether ParseEnvelope reads field f.
func isEnvelopeField(f field) bool {
	return f == fToUserName || f == fEncrypt || f == fAgentID
}

// child returns what the element name means inside an element of scope parent. Names
// compare case-sensitively, as XML names do. The switches on string(name) do not
// allocate.
func child(parent scope, name []byte) (scope, field) {
	switch parent {
	case sRoot:
		switch string(name) {
		case "ToUserName":
			return sLeaf, fToUserName
		case "FromUserName":
			return sLeaf, fFromUserName
		case "CreateTime":
			return sLeaf, fCreateTime
		case "MsgType":
			return sLeaf, fMsgType
		case "MsgId", "MsgID":
			return sLeaf, fMsgID
		case "Content":
			return sLeaf, fContent
		case "PicUrl":
			return sLeaf, fPicURL
		case "MediaId":
			return sLeaf, fMediaID
		case "Format":
			return sLeaf, fFormat
		case "Recognition":
			return sLeaf, fRecognition
		case "ThumbMediaId":
			return sLeaf, fThumbMediaID
		case "Location_X":
			return sLeaf, fLocationX
		case "Location_Y":
			return sLeaf, fLocationY
		case "Scale":
			return sLeaf, fScale
		case "Label":
			return sLeaf, fLabel
		case "Title":
			return sLeaf, fTitle
		case "Description":
			return sLeaf, fDescription
		case "Url":
			return sLeaf, fURL
		case "Event":
			return sLeaf, fEvent
		case "EventKey":
			return sLeaf, fEventKey
		case "Ticket":
			return sLeaf, fTicket
		case "Latitude":
			return sLeaf, fLatitude
		case "Longitude":
			return sLeaf, fLongitude
		case "Precision":
			return sLeaf, fPrecision
		case "MenuId", "MenuID":
			return sLeaf, fMenuID
		case "AgentID":
			return sLeaf, fAgentID
		case "Encrypt":
			return sLeaf, fEncrypt
		case "MsgSignature":
			return sLeaf, fMsgSignature
		case "TimeStamp":
			return sLeaf, fTimeStamp
		case "Nonce":
			return sLeaf, fNonce
		case "ArticleCount":
			return sLeaf, fArticleCount
		case "ScanCodeInfo":
			return sScanCodeInfo, fNone
		case "SendPicsInfo":
			return sSendPicsInfo, fNone
		case "SendLocationInfo":
			return sSendLocationInfo, fNone
		case "Image", "Voice":
			return sMedia, fNone
		case "Video":
			return sVideo, fNone
		case "Music":
			return sMusic, fNone
		case "TransInfo":
			return sTransInfo, fNone
		}
	case sScanCodeInfo:
		switch string(name) {
		case "ScanType":
			return sLeaf, fScanType
		case "ScanResult":
			return sLeaf, fScanResult
		}
	case sSendPicsInfo:
		switch string(name) {
		case "Count":
			return sLeaf, fPicCount
		case "PicList":
			return sPicList, fNone
		}
	case sPicList:
		if string(name) == "item" {
			return sPicItem, fNone
		}
	case sPicItem:
		if string(name) == "PicMd5Sum" {
			return sLeaf, fPicMD5
		}
	case sSendLocationInfo:
		switch string(name) {
		case "Location_X":
			return sLeaf, fSendLocationX
		case "Location_Y":
			return sLeaf, fSendLocationY
		case "Scale":
			return sLeaf, fSendScale
		case "Label":
			return sLeaf, fSendLabel
		case "Poiname":
			return sLeaf, fSendPoiname
		}
	case sMedia:
		if string(name) == "MediaId" {
			return sLeaf, fMediaID
		}
	case sVideo:
		switch string(name) {
		case "MediaId":
			return sLeaf, fMediaID
		case "Title":
			return sLeaf, fTitle
		case "Description":
			return sLeaf, fDescription
		}
	case sMusic:
		switch string(name) {
		case "Title":
			return sLeaf, fTitle
		case "Description":
			return sLeaf, fDescription
		case "MusicUrl":
			return sLeaf, fMusicURL
		case "HQMusicUrl":
			return sLeaf, fHQMusicURL
		case "ThumbMediaId":
			return sLeaf, fThumbMediaID
		}
	case sTransInfo:
		if string(name) == "KfAccount" {
			return sLeaf, fKfAccount
		}
	}
	return sIgnore, fNone
}

// bytesField returns the []byte field f fills, or nil for the fields that are not bytes.
func (m *Message) bytesField(f field) *[]byte {
	switch f {
	case fToUserName:
		return &m.ToUserName
	case fFromUserName:
		return &m.FromUserName
	case fMsgType:
		return &m.MsgType
	case fMsgID:
		return &m.MsgID
	case fContent:
		return &m.Content
	case fPicURL:
		return &m.PicURL
	case fMediaID:
		return &m.MediaID
	case fFormat:
		return &m.Format
	case fRecognition:
		return &m.Recognition
	case fThumbMediaID:
		return &m.ThumbMediaID
	case fLocationX:
		return &m.LocationX
	case fLocationY:
		return &m.LocationY
	case fScale:
		return &m.Scale
	case fLabel:
		return &m.Label
	case fTitle:
		return &m.Title
	case fDescription:
		return &m.Description
	case fURL:
		return &m.URL
	case fEvent:
		return &m.Event
	case fEventKey:
		return &m.EventKey
	case fTicket:
		return &m.Ticket
	case fLatitude:
		return &m.Latitude
	case fLongitude:
		return &m.Longitude
	case fPrecision:
		return &m.Precision
	case fMenuID:
		return &m.MenuID
	case fScanType:
		return &m.ScanType
	case fScanResult:
		return &m.ScanResult
	case fSendLocationX:
		return &m.SendLocationX
	case fSendLocationY:
		return &m.SendLocationY
	case fSendScale:
		return &m.SendScale
	case fSendLabel:
		return &m.SendLabel
	case fSendPoiname:
		return &m.SendPoiname
	case fAgentID:
		return &m.AgentID
	case fEncrypt:
		return &m.Encrypt
	case fMsgSignature:
		return &m.MsgSignature
	case fTimeStamp:
		return &m.TimeStamp
	case fNonce:
		return &m.Nonce
	case fMusicURL:
		return &m.MusicURL
	case fHQMusicURL:
		return &m.HQMusicURL
	case fKfAccount:
		return &m.KfAccount
	}
	return nil
}

// set stores the value v of leaf element f, named name, that ends at byte at; it
// enforces f's limits first.
func (p *parser) set(at int, name []byte, f field, v []byte) error {
	if l := limits[f]; l.max > 0 {
		if len(v) > l.max {
			return fmt.Errorf("%w: <%s> has %d bytes, at most %d allowed, at byte %d",
				ErrFieldTooLong, clip(name), len(v), l.max, at)
		}
		if l.digits && !allDigits(v) {
			return p.errorf(at, "<%s> %q is not a decimal number", clip(name), clip(v))
		}
	}
	return p.m.set(f, v)
}

// set stores the value of leaf element f.
func (m *Message) set(f field, v []byte) error {
	switch f {
	case fCreateTime, fPicCount, fArticleCount:
		n, ok := parseInt(v)
		if !ok {
			return fmt.Errorf("%w: element value %q is not an integer", ErrMalformed, clip(v))
		}
		switch f {
		case fCreateTime:
			m.CreateTime = n
		case fPicCount:
			m.PicCount = int(n)
		default:
			m.ArticleCount = int(n)
		}
	case fPicMD5:
		m.PicMD5s[len(m.PicMD5s)-1] = v
	default:
		*m.bytesField(f) = v
	}
	return nil
}

type tokenKind uint8

const (
	tokEOF     tokenKind = iota
	tokText              // character data up to the next '<'
	tokCDATA             // the inside of <![CDATA[…]]>
	tokStart             // <name attr="…"> or <name/>
	tokEnd               // </name>
	tokComment           // <!--…-->
	tokPI                // <?…?>, including the XML declaration
)

// token is one piece of markup or text: data[s:e] is the text, the CDATA content or the
// element name.
type token struct {
	kind        tokenKind
	selfClosing bool
	s, e        int
}

// frame is an open element.
type frame struct {
	nameStart, nameEnd int
	scope              scope
	field              field
}

// parser reads one document into a Message. It lives on Parse's stack: the element stack
// is a fixed array and values are recorded as offsets, so parsing allocates only when the
// Message's scratch space or PicMD5s must grow.
type parser struct {
	data     []byte
	pos      int
	m        *Message
	envelope bool // ParseEnvelope: read only the envelope's fields
	depth    int
	stack    [maxDepth]frame
	seen     uint64 // bit f is set once field f has been read (PicMD5: in this <item>)

	// The value of the leaf element being read. A leaf's text may come in several
	// pieces (text, CDATA sections, text again, split by comments or skipped child
	// elements); the first clean piece is remembered by offset, and only a second piece,
	// an entity or a carriage return moves the value into m.scratch.
	pieces               int
	aliasStart, aliasEnd int
	scratchStart         int // -1 while the value is an alias of data
}

func (p *parser) errorf(at int, format string, args ...any) error {
	return fmt.Errorf("%w: %s at byte %d", ErrMalformed, fmt.Sprintf(format, args...), at)
}

func (p *parser) parse() error {
	if i := badChar(p.data); i >= 0 {
		return p.errorf(i, "character XML does not allow (NUL, control character or invalid UTF-8)")
	}
	if bytes.HasPrefix(p.data, []byte("\xef\xbb\xbf")) {
		p.pos = 3
	}
	// Prolog: white space, comments and processing instructions, then the root.
prolog:
	for {
		at := p.pos
		tok, err := p.next()
		if err != nil {
			return err
		}
		switch tok.kind {
		case tokComment, tokPI:
			continue
		case tokText:
			if len(trimSpace(p.data[tok.s:tok.e])) != 0 {
				return p.errorf(at, "text before the root element")
			}
			continue
		case tokEOF:
			return p.errorf(at, "no root element")
		case tokStart:
			if string(p.data[tok.s:tok.e]) != "xml" {
				return p.errorf(at, "root element is %q, want \"xml\"", clip(p.data[tok.s:tok.e]))
			}
			if !tok.selfClosing {
				p.push(tok, sRoot, fNone)
			}
		default:
			return p.errorf(at, "markup before the root element")
		}
		break prolog
	}
	// Content of the root element.
	for p.depth > 0 {
		at := p.pos
		tok, err := p.next()
		if err != nil {
			return err
		}
		switch tok.kind {
		case tokText:
			err = p.text(tok.s, tok.e, false)
		case tokCDATA:
			err = p.text(tok.s, tok.e, true)
		case tokStart:
			err = p.open(at, tok)
		case tokEnd:
			err = p.close(at, tok)
		case tokEOF:
			err = p.errorf(at, "unexpected end of input: %d elements not closed", p.depth)
		}
		if err != nil {
			return err
		}
	}
	// Epilog: only white space, comments and processing instructions may follow.
	for {
		at := p.pos
		tok, err := p.next()
		if err != nil {
			return err
		}
		switch tok.kind {
		case tokEOF:
			return nil
		case tokComment, tokPI:
		case tokText:
			if len(trimSpace(p.data[tok.s:tok.e])) != 0 {
				return p.errorf(at, "text after the root element")
			}
		default:
			return p.errorf(at, "markup after the root element")
		}
	}
}

func (p *parser) push(tok token, sc scope, f field) {
	p.stack[p.depth] = frame{nameStart: tok.s, nameEnd: tok.e, scope: sc, field: f}
	p.depth++
}

// open handles a start tag inside the root element.
func (p *parser) open(at int, tok token) error {
	parent := p.stack[p.depth-1].scope
	sc, f := sIgnore, fNone
	if parent != sIgnore && parent != sLeaf { // text fields skip child elements, as encoding/xml does
		sc, f = child(parent, p.data[tok.s:tok.e])
	}
	if p.envelope && !isEnvelopeField(f) {
		sc, f = sIgnore, fNone
	}
	switch sc {
	case sPicItem:
		p.m.PicMD5s = append(p.m.PicMD5s, nil)
		p.seen &^= 1 << fPicMD5 // each picture has its own checksum
	case sLeaf:
		if p.seen&(1<<f) != 0 {
			return p.errorf(at, "element <%s> repeats a field given before", clip(p.data[tok.s:tok.e]))
		}
		p.seen |= 1 << f
	}
	if tok.selfClosing {
		if sc == sLeaf {
			return p.set(at, p.data[tok.s:tok.e], f, p.data[at:at:at])
		}
		return nil
	}
	if p.depth == maxDepth {
		return p.errorf(at, "elements nested more than %d deep", maxDepth)
	}
	p.push(tok, sc, f)
	if sc == sLeaf {
		p.pieces, p.scratchStart = 0, -1
	}
	return nil
}

// close handles an end tag, storing the value of a leaf.
func (p *parser) close(at int, tok token) error {
	top := &p.stack[p.depth-1]
	if !bytes.Equal(p.data[top.nameStart:top.nameEnd], p.data[tok.s:tok.e]) {
		return p.errorf(at, "end tag %q closes element %q", clip(p.data[tok.s:tok.e]), clip(p.data[top.nameStart:top.nameEnd]))
	}
	p.depth--
	if top.scope != sLeaf {
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
	return p.set(at, p.data[top.nameStart:top.nameEnd], top.field, v)
}

// text checks a run of character data (or the inside of a CDATA section) and, when it
// is directly inside a leaf element, adds it to that element's value.
func (p *parser) text(s, e int, cdata bool) error {
	d := p.data[s:e]
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
				clean = false
				i += n - 1
			case '\r':
				clean = false
			case ']':
				if i+2 < len(d) && d[i+1] == ']' && d[i+2] == '>' {
					return p.errorf(s+i, "]]> outside a CDATA section")
				}
			}
		}
	}
	if p.stack[p.depth-1].scope != sLeaf || len(d) == 0 {
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
	for len(d) > 0 {
		i := 0
		for i < len(d) && d[i] != '\r' && (cdata || d[i] != '&') {
			i++
		}
		dst = append(dst, d[:i]...)
		d = d[i:]
		if len(d) == 0 {
			break
		}
		if d[0] == '\r' {
			dst = append(dst, '\n')
			d = d[1:]
			if len(d) > 0 && d[0] == '\n' {
				d = d[1:]
			}
			continue
		}
		n, r, _ := entity(d) // checked by parser.text
		dst = utf8.AppendRune(dst, r)
		d = d[n:]
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
	switch string(ref) {
	case "lt":
		return end + 1, '<', true
	case "gt":
		return end + 1, '>', true
	case "amp":
		return end + 1, '&', true
	case "apos":
		return end + 1, '\'', true
	case "quot":
		return end + 1, '"', true
	}
	if ref[0] != '#' || len(ref) < 2 {
		return 0, 0, false
	}
	digits, base := ref[1:], rune(10)
	if digits[0] == 'x' {
		digits, base = digits[1:], 16
	}
	if len(digits) == 0 {
		return 0, 0, false
	}
	for _, c := range digits {
		var v rune
		switch {
		case '0' <= c && c <= '9':
			v = rune(c - '0')
		case base == 16 && 'a' <= c && c <= 'f':
			v = rune(c-'a') + 10
		case base == 16 && 'A' <= c && c <= 'F':
			v = rune(c-'A') + 10
		default:
			return 0, 0, false
		}
		r = r*base + v
		if r > utf8.MaxRune {
			return 0, 0, false
		}
	}
	if !isXMLChar(r) {
		return 0, 0, false
	}
	return end + 1, r, true
}

// next reads the token at p.pos.
func (p *parser) next() (token, error) {
	d, i := p.data, p.pos
	if i >= len(d) {
		return token{kind: tokEOF}, nil
	}
	if d[i] != '<' {
		j := bytes.IndexByte(d[i:], '<')
		if j < 0 {
			j = len(d)
		} else {
			j += i
		}
		p.pos = j
		return token{kind: tokText, s: i, e: j}, nil
	}
	if i+1 >= len(d) {
		return token{}, p.errorf(i, "unexpected end of input after <")
	}
	switch d[i+1] {
	case '/':
		s := i + 2
		e := nameEnd(d, s)
		if e == s {
			return token{}, p.errorf(i, "end tag without a name")
		}
		k := skipSpace(d, e)
		if k >= len(d) || d[k] != '>' {
			return token{}, p.errorf(i, "unterminated end tag")
		}
		p.pos = k + 1
		return token{kind: tokEnd, s: s, e: e}, nil
	case '?':
		j := bytes.Index(d[i+2:], []byte("?>"))
		if j < 0 {
			return token{}, p.errorf(i, "unterminated processing instruction")
		}
		p.pos = i + 2 + j + 2
		return token{kind: tokPI}, nil
	case '!':
		if bytes.HasPrefix(d[i:], []byte("<!--")) {
			j := bytes.Index(d[i+4:], []byte("-->"))
			if j < 0 {
				return token{}, p.errorf(i, "unterminated comment")
			}
			p.pos = i + 4 + j + 3
			return token{kind: tokComment}, nil
		}
		if bytes.HasPrefix(d[i:], []byte("<![CDATA[")) {
			s := i + len("<![CDATA[")
			j := bytes.Index(d[s:], []byte("]]>"))
			if j < 0 {
				return token{}, p.errorf(i, "unterminated CDATA section")
			}
			p.pos = s + j + 3
			return token{kind: tokCDATA, s: s, e: s + j}, nil
		}
		return token{}, p.errorf(i, "DOCTYPE and other declarations are not accepted")
	}
	s := i + 1
	e := nameEnd(d, s)
	if e == s {
		return token{}, p.errorf(i, "expected an element name after <")
	}
	// Attributes are checked for form and skipped: WeChat sends none that matter.
	k := e
	for {
		sp := k
		k = skipSpace(d, k)
		if k >= len(d) {
			return token{}, p.errorf(i, "unterminated start tag")
		}
		switch d[k] {
		case '>':
			p.pos = k + 1
			return token{kind: tokStart, s: s, e: e}, nil
		case '/':
			if k+1 < len(d) && d[k+1] == '>' {
				p.pos = k + 2
				return token{kind: tokStart, selfClosing: true, s: s, e: e}, nil
			}
			return token{}, p.errorf(k, "expected > after / in a start tag")
		}
		an := nameEnd(d, k)
		if k == sp || an == k {
			return token{}, p.errorf(k, "malformed attribute")
		}
		k = skipSpace(d, an)
		if k >= len(d) || d[k] != '=' {
			return token{}, p.errorf(k, "attribute without a value")
		}
		k = skipSpace(d, k+1)
		if k >= len(d) || (d[k] != '"' && d[k] != '\'') {
			return token{}, p.errorf(k, "attribute value not quoted")
		}
		j := bytes.IndexByte(d[k+1:], d[k])
		if j < 0 {
			return token{}, p.errorf(k, "unterminated attribute value")
		}
		k += 1 + j + 1
	}
}

// nameEnd returns the end of the XML name starting at d[s:], or s if there is none. Like
// encoding/xml it takes any non-ASCII byte as part of a name.
func nameEnd(d []byte, s int) int {
	i := s
	for i < len(d) && isNameByte(d[i]) {
		i++
	}
	if i > s && (d[s] == '-' || d[s] == '.' || ('0' <= d[s] && d[s] <= '9')) {
		return s // not a valid first character
	}
	return i
}

func isNameByte(c byte) bool { return nameBytes[c] }

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
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// badChar returns the offset of the first byte of d that does not start a character XML
// 1.0 allows, encoded as valid UTF-8 — NUL and the other control characters but tab, line
// feed and carriage return, U+FFFE, U+FFFF, surrogates, invalid or overlong sequences — or
// -1 when there is none. Eight bytes at a time are skipped while they are all printable
// ASCII, so a WeChat message costs a few nanoseconds.
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

// asciiEqualFold reports whether b equals s ignoring ASCII case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// parseInt parses a decimal integer with optional sign and surrounding white space; an
// empty value is 0, as encoding/xml has it.
func parseInt(b []byte) (int64, bool) {
	b = trimSpace(b)
	if len(b) == 0 {
		return 0, true
	}
	neg := false
	switch b[0] {
	case '-':
		neg, b = true, b[1:]
	case '+':
		b = b[1:]
	}
	if len(b) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		if n > (1<<63)/10 {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
		if n > 1<<63 {
			return 0, false
		}
	}
	if neg {
		return -int64(n), true // -(1<<63) wraps to itself, which is right
	}
	if n > 1<<63-1 {
		return 0, false
	}
	return int64(n), true
}

// clip shortens b for an error message.
func clip(b []byte) string {
	const max = 32
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}
