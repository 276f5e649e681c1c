package api

import (
	"encoding/json"
	"net/http"

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
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"code":"internal","message":"cannot encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, message string, details ...model.Issue) {
	writeJSON(w, status, apiError{Code: code, Message: message, Details: details})
}
