package events

import (
	"encoding/json"
	"strconv"
	"time"
)

// The envelope's own fields are a handful of short ASCII strings, a number
// and a time: encoding/json's reflection costs more on them than on the
// payload. appendHead and scanEnvelope handle the common shape directly
// and hand anything else to encoding/json, so the bytes written and the
// values read are exactly encoding/json's (codec_test.go compares them).

// appendHead appends the envelope's fields as a JSON object without its
// closing brace, byte for byte what json.Marshal(envelopeHead) writes.
func appendHead(b []byte, h envelopeHead) ([]byte, error) {
	if h.Time.Year() < 0 || h.Time.Year() > 9999 {
		// time.Time.MarshalJSON refuses these; let it say so.
		return appendHeadSlow(b, h)
	}
	b = append(b, `{"id":`...)
	b = appendString(b, h.ID)
	b = append(b, `,"type":`...)
	b = appendString(b, string(h.Type))
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, int64(h.Version), 10)
	b = append(b, `,"time":"`...)
	b = h.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","source":`...)
	b = appendString(b, h.Source)
	if h.Project != "" {
		b = append(b, `,"project":`...)
		b = appendString(b, h.Project)
	}
	b = append(b, `,"subject":{"kind":`...)
	b = appendString(b, h.Subject.Kind)
	b = append(b, `,"name":`...)
	b = appendString(b, h.Subject.Name)
	return append(b, '}'), nil
}

func appendHeadSlow(b []byte, h envelopeHead) ([]byte, error) {
	head, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	return append(b, head[:len(head)-1]...), nil
}

// appendString appends s as a JSON string the way encoding/json writes it.
func appendString(b []byte, s string) []byte {
	if !plain(s) {
		q, _ := json.Marshal(s) // a string always encodes
		return append(b, q...)
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// plain reports whether s is printable ASCII that encoding/json writes as
// it is: no quote, backslash or HTML-escaped character.
func plain[S string | []byte](s S) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// scanEnvelope reads an envelope whose fields are all plain strings, in any
// order, into h (setting only the fields present, as encoding/json does)
// and returns the extent of its payload (nil when absent). ok is false for
// anything else (escapes, unknown or differently cased keys, malformed
// JSON): the caller then decodes with encoding/json, which gives the same
// result or the error.
func scanEnvelope(data []byte, h *envelopeHead) (payload []byte, ok bool) {
	s := scanner{data: data}
	if !s.byte('{') {
		return nil, false
	}
	if s.peek() == '}' {
		s.i++
		return nil, s.end()
	}
	for {
		key, ok := s.str()
		if !ok || !s.byte(':') {
			return nil, false
		}
		switch string(key) {
		case "id":
			h.ID, ok = s.strValue()
		case "type":
			var t string
			t, ok = s.strValue()
			h.Type = Type(t)
		case "version":
			h.Version, ok = s.int()
		case "time":
			s.space()
			start := s.i
			if _, ok = s.str(); ok {
				// What encoding/json calls, so the same times parse.
				ok = h.Time.UnmarshalJSON(s.data[start:s.i]) == nil
			}
		case "source":
			h.Source, ok = s.strValue()
		case "project":
			h.Project, ok = s.strValue()
		case "subject":
			ok = s.ref(&h.Subject)
		case "payload":
			if payload != nil {
				return nil, false // encoding/json merges the two
			}
			s.space()
			start := s.i
			if ok = s.skip(); ok {
				payload = data[start:s.i]
			}
		default:
			return nil, false
		}
		if !ok {
			return nil, false
		}
		switch s.next() {
		case ',':
			continue
		case '}':
			return payload, s.end()
		default:
			return nil, false
		}
	}
}

type scanner struct {
	data []byte
	i    int
}

func (s *scanner) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) peek() byte {
	s.space()
	if s.i >= len(s.data) {
		return 0
	}
	return s.data[s.i]
}

func (s *scanner) next() byte {
	c := s.peek()
	if c != 0 {
		s.i++
	}
	return c
}

func (s *scanner) byte(c byte) bool { return s.next() == c }

// end reports whether only white space is left.
func (s *scanner) end() bool {
	s.space()
	return s.i == len(s.data)
}

// str reads a plain string (see plain): its bytes, unquoted.
func (s *scanner) str() ([]byte, bool) {
	if !s.byte('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.data) {
		c := s.data[s.i]
		if c == '"' {
			v := s.data[start:s.i]
			s.i++
			return v, true
		}
		if c < 0x20 || c >= 0x7f || c == '\\' {
			return nil, false
		}
		s.i++
	}
	return nil, false
}

func (s *scanner) strValue() (string, bool) {
	v, ok := s.str()
	return string(v), ok
}

// int reads a JSON integer that fits an int.
func (s *scanner) int() (int, bool) {
	s.space()
	start := s.i
	if s.i < len(s.data) && s.data[s.i] == '-' {
		s.i++
	}
	digits := s.i
	for s.i < len(s.data) && s.data[s.i] >= '0' && s.data[s.i] <= '9' {
		s.i++
	}
	n := s.i - digits
	if n == 0 || n > 1 && s.data[digits] == '0' {
		return 0, false
	}
	v, err := strconv.Atoi(string(s.data[start:s.i]))
	return v, err == nil
}

// ref reads {"kind": …, "name": …} with plain strings in either order
// into r, setting only the fields present.
func (s *scanner) ref(r *Ref) bool {
	if !s.byte('{') {
		return false
	}
	if s.peek() == '}' {
		s.i++
		return true
	}
	for {
		key, ok := s.str()
		if !ok || !s.byte(':') {
			return false
		}
		switch string(key) {
		case "kind":
			r.Kind, ok = s.strValue()
		case "name":
			r.Name, ok = s.strValue()
		default:
			return false
		}
		if !ok {
			return false
		}
		switch s.next() {
		case ',':
			continue
		case '}':
			return true
		default:
			return false
		}
	}
}

// skip passes over one JSON value, checking only its nesting and strings:
// encoding/json validates the payload when it decodes it.
func (s *scanner) skip() bool {
	depth := 0
	for {
		c := s.peek()
		switch c {
		case 0:
			return false
		case '{', '[':
			depth++
			s.i++
		case '}', ']':
			depth--
			s.i++
			if depth < 0 {
				return false
			}
		case '"':
			s.i++
			for {
				if s.i >= len(s.data) {
					return false
				}
				c := s.data[s.i]
				s.i++
				if c == '\\' {
					s.i++
				} else if c == '"' {
					break
				}
			}
		case ',', ':':
			if depth == 0 {
				return false
			}
			s.i++
		default: // number, true, false, null
			start := s.i
			for s.i < len(s.data) {
				c := s.data[s.i]
				if c == ',' || c == '}' || c == ']' || c == ':' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '"' || c == '{' || c == '[' {
					break
				}
				s.i++
			}
			if s.i == start {
				return false
			}
		}
		if depth == 0 {
			return true
		}
	}
}
