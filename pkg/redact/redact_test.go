package redact_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/pkg/redact"
)

const secret = "Sup3r+S3cret/Value="

func TestString(t *testing.T) {
	t.Parallel()
	r := redact.New(secret)
	basic := base64.StdEncoding.EncodeToString([]byte("user:" + secret))
	tests := []struct {
		name, in, want string
	}{
		{"plain", "token " + secret + " end", "token *** end"},
		{"upper", "TOKEN " + strings.ToUpper(secret), "TOKEN ***"},
		{"lower", strings.ToLower(secret) + "!", "***!"},
		{"base64", "b=" + base64.StdEncoding.EncodeToString([]byte(secret)), "b=***"},
		{"base64 raw", base64.RawStdEncoding.EncodeToString([]byte(secret)), "***"},
		{"base64 url", base64.URLEncoding.EncodeToString([]byte(secret)), "***"},
		{"base64 url raw", base64.RawURLEncoding.EncodeToString([]byte(secret)), "***"},
		{"hex", hex.EncodeToString([]byte(secret)), "***"},
		{"hex upper", strings.ToUpper(hex.EncodeToString([]byte(secret))), "***"},
		{"query", "https://x/?t=" + url.QueryEscape(secret), "https://x/?t=***"},
		{"path", "https://x/" + url.PathEscape(secret) + "/y", "https://x/***/y"},
		{"json", mustJSON(t, map[string]string{"t": secret + "<>"}), `{"t":"***\u003c\u003e"}`},
		{"nothing", "nothing to hide", "nothing to hide"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := r.String(tt.in); got != tt.want {
				t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	// Inside a longer base64 string (a Basic authorization header) the
	// characters that only the secret makes are hidden.
	t.Run("basic auth", func(t *testing.T) {
		t.Parallel()
		got := r.String("Authorization: Basic " + basic)
		if !strings.Contains(got, redact.Mask) || strings.Contains(got, basic) {
			t.Errorf("String(basic auth) = %q", got)
		}
		dec := strings.TrimPrefix(got, "Authorization: Basic ")
		if rest := strings.ReplaceAll(dec, redact.Mask, ""); len(rest) > 12 {
			t.Errorf("%d characters of the encoding left: %q", len(rest), got)
		}
	})
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestShortAndMultiline(t *testing.T) {
	t.Parallel()
	r := redact.New("abc", "", "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----\n")
	if r.Len() != 1 {
		t.Fatalf("Len = %d, want 1 (short values are not kept)", r.Len())
	}
	if got := r.String("abc"); got != "abc" {
		t.Errorf("short value redacted: %q", got)
	}
	if got := r.String(`key line "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"`); strings.Contains(got, "MIIEvQ") {
		t.Errorf("a line of a multi-line secret shows: %q", got)
	}
}

func TestNilAndEmpty(t *testing.T) {
	t.Parallel()
	var r *redact.Redactor
	r.Add(secret)
	if r.String(secret) != secret || r.Value(secret) != secret || r.Len() != 0 {
		t.Error("a nil Redactor changed something")
	}
	if err := r.Error(nil); err != nil {
		t.Error(err)
	}
	empty := redact.New()
	if empty.String(secret) != secret {
		t.Error("an empty Redactor changed something")
	}
}

func TestAddLater(t *testing.T) {
	t.Parallel()
	r := redact.New()
	if r.String(secret) != secret {
		t.Fatal("redacted before Add")
	}
	r.Add(secret)
	if r.String(secret) != redact.Mask {
		t.Fatal("not redacted after Add")
	}
}

func TestError(t *testing.T) {
	t.Parallel()
	r := redact.New(secret)
	base := fmt.Errorf("GET https://x/%s: %w", secret, fs.ErrNotExist)
	err := r.Error(base)
	if strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "GET https://x/***") {
		t.Errorf("Error() = %q", err)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Error("errors.Is lost the wrapped error")
	}
	plain := errors.New("nothing")
	if got := r.Error(plain); got != plain { //nolint:errorlint // the very error must come back, not a wrapper
		t.Error("an error without secrets was wrapped")
	}
}

func TestValueAndJSON(t *testing.T) {
	t.Parallel()
	r := redact.New(secret)
	in := map[string]any{
		"a": secret,
		"b": []any{"x", strings.ToUpper(secret), map[string]any{secret: 1.5}},
		"c": []string{secret},
		"d": map[string]string{"k": secret},
		"n": 42,
	}
	out := r.Value(in)
	b := mustJSON(t, out)
	if strings.Contains(b, "S3cret") || strings.Contains(b, "S3CRET") || !strings.Contains(b, `"n":42`) {
		t.Errorf("Value = %s", b)
	}
	if in["a"] != secret {
		t.Error("Value changed its input")
	}

	type measurement struct {
		Value   string  `json:"value"`
		Message string  `json:"message,omitempty"`
		Count   int64   `json:"count"`
		Ratio   float64 `json:"ratio"`
	}
	type result struct {
		Phase        string        `json:"phase"`
		Measurements []measurement `json:"measurements"`
	}
	res := result{Phase: "Error", Measurements: []measurement{{Value: `{"echo":"` + secret + `"}`, Message: "GET /" + url.PathEscape(secret), Count: 1 << 60, Ratio: 0.25}}}
	got, err := redact.JSON(r, res)
	if err != nil {
		t.Fatal(err)
	}
	if r.Leaks(mustJSON(t, got)) {
		t.Errorf("JSON left a secret: %+v", got)
	}
	if got.Measurements[0].Count != 1<<60 || got.Measurements[0].Ratio != 0.25 || got.Phase != "Error" {
		t.Errorf("JSON changed other fields: %+v", got)
	}
	if res.Measurements[0].Message == got.Measurements[0].Message {
		t.Error("JSON did not redact")
	}
}

func TestHandler(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	r := redact.New()
	log := r.Logger(slog.New(slog.NewJSONHandler(&buf, nil)))
	r.Add(secret)
	type rec struct{ Token string }
	log.With("url", "https://x/"+secret).WithGroup("g").Info("token "+secret,
		"err", fmt.Errorf("auth %s", secret),
		"map", map[string]any{"t": strings.ToLower(secret)},
		"struct", rec{Token: secret},
		slog.Group("inner", "b64", base64.StdEncoding.EncodeToString([]byte(secret))),
		"n", 7,
	)
	out := buf.String()
	if r.Leaks(out) || strings.Contains(out, "S3cret") {
		t.Errorf("log holds the secret: %s", out)
	}
	for _, want := range []string{`"msg":"token ***"`, `"url":"https://x/***"`, `"n":7`, `"b64":"***"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log %s lacks %s", out, want)
		}
	}
}

func FuzzString(f *testing.F) {
	f.Add(secret, "prefix ", " suffix")
	f.Add("pässwörd€", "", "")
	f.Add("a\nbcdefghijkl\n", "x", "y")
	f.Fuzz(func(t *testing.T, value, before, after string) {
		if strings.Contains(value, "*") {
			return // the mask and what follows it could spell the value again
		}
		r := redact.New(value)
		if r.Len() == 0 {
			return
		}
		for _, form := range []string{
			value, strings.ToUpper(value),
			base64.StdEncoding.EncodeToString([]byte(value)),
			base64.RawURLEncoding.EncodeToString([]byte(value)),
			url.QueryEscape(value),
		} {
			if len(form) < redact.MinLength {
				continue
			}
			got := r.String(before + form + after)
			if strings.Contains(got, form) {
				t.Fatalf("String(%q) = %q still holds %q", before+form+after, got, form)
			}
		}
	})
}
