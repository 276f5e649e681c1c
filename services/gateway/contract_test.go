package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// The contract: every answer a gateway test reads through harness.do is
// checked against the served /openapi.json (kin-openapi's validator), so
// the whole suite exercises the document, success and error bodies alike.
var contract struct {
	once   sync.Once
	doc    *openapi3.T
	router routers.Router
	err    error
	// checked records "METHOD path status" of every answer checked.
	mu      sync.Mutex
	checked map[string]bool
}

// loadContract reads /openapi.json from h's server (once per process: it
// is the same document on every harness) and validates it.
func loadContract(h *harness) error {
	contract.once.Do(func() {
		resp, err := h.srv.Client().Get(h.srv.URL + "/openapi.json")
		if err != nil {
			contract.err = err
			return
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			contract.err = err
			return
		}
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(b)
		if err != nil {
			contract.err = err
			return
		}
		if err := doc.Validate(context.Background()); err != nil {
			contract.err = err
			return
		}
		doc.Servers = nil // match paths alone
		contract.doc = doc
		contract.router, contract.err = legacy.NewRouter(doc)
		contract.checked = map[string]bool{}
	})
	return contract.err
}

// checkContract fails the test when the answer to req does not match the
// document. Paths the document does not have are the mux's own 404s.
func (h *harness) checkContract(req *http.Request, status int, header http.Header, body []byte) {
	h.t.Helper()
	if err := loadContract(h); err != nil {
		h.t.Fatalf("openapi.json: %v", err)
	}
	route, params, err := contract.router.FindRoute(req)
	var notRouted *routers.RouteError
	if errors.As(err, &notRouted) {
		return
	}
	if err != nil {
		h.t.Fatalf("%s %s: find route: %v", req.Method, req.URL.Path, err)
	}
	if strings.HasPrefix(header.Get("Content-Type"), "text/event-stream") {
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 status,
		Header:                 header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		h.t.Errorf("%s %s answered %d, which /openapi.json does not describe: %v\nbody: %.600s", req.Method, req.URL.Path, status, err, body)
		return
	}
	if status < 300 {
		contract.mu.Lock()
		contract.checked[req.Method+" "+route.Path] = true
		contract.mu.Unlock()
	}
}

// TestMain runs the tests, then (when all of them ran) checks that every
// JSON route of the document had a successful answer checked.
func TestMain(m *testing.M) {
	code := m.Run()
	if code != 0 || flag.Lookup("test.run").Value.String() != "" || contract.doc == nil {
		os.Exit(code)
	}
	var missing []string
	for path, item := range contract.doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.Responses.Status(http.StatusOK) != nil && op.Responses.Status(http.StatusOK).Value.Content.Get("text/event-stream") != nil {
				continue // a stream, read by its own tests
			}
			if !contract.checked[method+" "+path] {
				missing = append(missing, method+" "+path)
			}
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		fmt.Fprintf(os.Stderr, "FAIL: no test checked a successful answer of these routes against /openapi.json:\n  %s\n", strings.Join(missing, "\n  "))
		os.Exit(1)
	}
	os.Exit(code)
}
