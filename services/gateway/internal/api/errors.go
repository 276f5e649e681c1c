package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sync"

	"github.com/caravan-cd/caravan/pkg/model"
)

// Error codes.
const (
	codeInvalid          = "invalid"
	codeNotFound         = "not_found"
	codeConflict         = "conflict"
	codeMethodNotAllowed = "method_not_allowed"
	codeUnauthorized     = "unauthorized"
	codeForbidden        = "forbidden"
	codeRateLimited      = "rate_limited"
	codeNotAvailable     = "not_available"
	codeTooLarge         = "too_large"
	codeUnsupportedMedia = "unsupported_media_type"
	codeNotReady         = "not_ready"
	codeInternal         = "internal"
)

// apiError is the body of every error answer.
type apiError struct {
	Code    string       `json:"code"`
	Message string       `json:"message"`
	Details model.Issues `json:"details,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	// Encoded into a pooled buffer, not json.Marshal: a large list (a
	// thousand stages) is then not copied out of the encoder and again to
	// append the newline on every request. The bytes are the same
	// (Encode escapes HTML as Marshal does and ends with a newline).
	buf := jsonBuffers.Get().(*bytes.Buffer)
	defer putJSONBuffer(buf)
	buf.Reset()
	if err := json.NewEncoder(buf).Encode(v); err != nil {
		writeBody(w, http.StatusInternalServerError, []byte(unencodable))
		return
	}
	writeBody(w, status, buf.Bytes())
}

// unencodable is the answer when the real one cannot be encoded.
const unencodable = `{"code":"internal","message":"cannot encode the answer"}` + "\n"

// writeBody answers status with body, JSON.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	writeHeader(w, status)
	_, _ = w.Write(body)
}

// writeHeader sends the headers of a JSON answer.
func writeHeader(w http.ResponseWriter, status int) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
}

// jsonBuffers are writeJSON's buffers; one grown past maxPooledJSON is
// dropped rather than kept.
var jsonBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxPooledJSON = 4 << 20

func putJSONBuffer(b *bytes.Buffer) {
	if b.Cap() <= maxPooledJSON {
		jsonBuffers.Put(b)
	}
}

func writeError(w http.ResponseWriter, status int, code, message string, details ...model.Issue) {
	writeJSON(w, status, apiError{Code: code, Message: message, Details: details})
}
