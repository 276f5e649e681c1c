package api

import (
	"encoding"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3gen"

	"github.com/caravan-cd/caravan/pkg/buildinfo"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/gateway/internal/apply"
	"github.com/caravan-cd/caravan/services/gateway/internal/auth"
)

var (
	openAPIOnce sync.Once
	openAPIDoc  []byte
	openAPIErr  error
)

// openAPI serves the OpenAPI 3 document, built from the route table and
// the Go types of every body, so a route cannot exist without being
// documented and a body cannot drift from its schema unnoticed (the tests
// check real answers against it).
func (s *server) openAPI(w http.ResponseWriter, r *http.Request) {
	openAPIOnce.Do(func() {
		var doc *openapi3.T
		if doc, openAPIErr = buildOpenAPI(s.routes(s.reg)); openAPIErr == nil {
			openAPIDoc, openAPIErr = json.Marshal(doc)
		}
	})
	if openAPIErr != nil {
		s.internal(w, r, fmt.Errorf("build the OpenAPI document: %w", openAPIErr))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(openAPIDoc)
}

// Bodies documented only (the handlers answer the same shape with maps or
// anonymous structs).
type (
	// statusAnswer is the body of /healthz and /readyz.
	statusAnswer struct {
		Status string `json:"status"`
	}
	// tokenRequest is the body of POST …/tokens.
	tokenRequest struct {
		Name string `json:"name"`
		Role string `json:"role"`
	}
	// revokedToken is the answer to DELETE …/tokens/{name}.
	revokedToken struct {
		Name   string `json:"name"`
		Status string `json:"status"`
	}
	// replayAnswer is the answer to POST /v1/deadletters/{id}/replay.
	replayAnswer struct {
		ID      string      `json:"id"`
		Status  string      `json:"status"`
		Type    events.Type `json:"type"`
		Subject string      `json:"subject"`
	}
	// listOf is the list shape of kind T (the handlers' list).
	listOf[T any] struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Items      []T      `json:"items"`
		Metadata   listMeta `json:"metadata"`
	}
	// anyJSON is any JSON value.
	anyJSON = json.RawMessage
)

// bodies are a route's request and answer types (nil: none, or not JSON).
type bodies struct {
	req  any
	resp any
	// alt is a second answer, with status 200, when the route's own
	// status is another (a query such as ?dryRun=true asks for it).
	alt any
}

// kindTypes maps each kind path to its type as the API answers it.
var kindTypes = map[string]any{
	"warehouses":        model.Warehouse{},
	"stages":            model.Stage{},
	"freight":           model.Freight{},
	"promotions":        model.Promotion{},
	"promotiontasks":    model.PromotionTask{},
	"analysistemplates": model.AnalysisTemplate{},
	"secrets":           secretView{},
}

// listTypes are the list of each kind path.
var listTypes = map[string]any{
	"warehouses":        listOf[model.Warehouse]{},
	"stages":            listOf[model.Stage]{},
	"freight":           listOf[model.Freight]{},
	"promotions":        listOf[model.Promotion]{},
	"promotiontasks":    listOf[model.PromotionTask]{},
	"analysistemplates": listOf[model.AnalysisTemplate]{},
	"secrets":           listOf[secretView]{},
}

// routeBodies are the bodies of every JSON route, by "METHOD path".
func routeBodies() map[string]bodies {
	m := map[string]bodies{
		"GET /healthz":                        {resp: statusAnswer{}},
		"GET /readyz":                         {resp: statusAnswer{}},
		"GET /openapi.json":                   {resp: anyJSON{}},
		"GET /version":                        {resp: buildinfo.Info{}},
		"POST /webhooks/{project}/{receiver}": {req: anyJSON{}, resp: hookAnswer{}},

		"POST /v1/resources":                       {req: anyJSON{}, resp: apply.Outcome{}},
		"DELETE /v1/resources":                     {req: anyJSON{}, resp: apply.Outcome{}},
		"GET /v1/projects":                         {resp: listOf[model.Project]{}},
		"GET /v1/projects/{project}":               {resp: model.Project{}},
		"GET /v1/projects/{project}/projectconfig": {resp: model.ProjectConfig{}},

		"POST /v1/projects/{project}/warehouses/{name}/refresh":            {req: refreshRequest{}, resp: events.Envelope{}},
		"POST /v1/projects/{project}/freight":                              {req: freightRequest{}, resp: model.Freight{}},
		"PATCH /v1/projects/{project}/freight/{name}":                      {req: aliasRequest{}, resp: model.Freight{}},
		"POST /v1/projects/{project}/freight/{name}/approve":               {req: approveRequest{}, resp: model.Freight{}},
		"POST /v1/projects/{project}/stages/{stage}/promotions":            {req: promoteRequest{}, resp: model.Promotion{}, alt: model.PromotionDryRun{}},
		"POST /v1/projects/{project}/promotions/{name}/abort":              {resp: events.Envelope{}},
		"POST /v1/projects/{project}/stages/{stage}/verification":          {resp: events.Envelope{}},
		"DELETE /v1/projects/{project}/stages/{stage}/verification":        {resp: events.Envelope{}},
		"POST /v1/projects/{project}/stages/{stage}/auto-promotion/resume": {resp: events.Envelope{}},
		"POST /v1/projects/{project}/tokens":                               {req: tokenRequest{}, resp: createdToken{}},
		"POST /v1/projects/{project}/promotions/{name}/approve":            {req: approvalRequest{}, resp: approvalAnswer{}},
		"GET /v1/projects/{project}/promotions/{name}/approval":            {resp: approvalAnswer{}},
		"GET /v1/projects/{project}/audit":                                 {resp: auditList{}},
		"GET /v1/projects/{project}/notifications":                         {resp: notificationList{}},
		"GET /v1/projects/{project}/tokens":                                {resp: tokenList{}},
		"GET /v1/projects/{project}/tokens/{name}":                         {resp: auth.Token{}},
		"DELETE /v1/projects/{project}/tokens/{name}":                      {resp: revokedToken{}},
		"GET /v1/deadletters":                                              {resp: deadLetterList{}},
		"POST /v1/deadletters/{id}/replay":                                 {resp: replayAnswer{}},
		"GET /v1/whoami":                                                   {resp: whoami{}},
		"GET /v1/projects/{project}/stages/{stage}/verifications":          {resp: listOf[verification]{}},
		"GET /v1/projects/{project}/stages/{stage}/verifications/{id}":     {resp: verification{}},
		"GET /v1/projects/{project}/promotions/{name}/diff":                {resp: promotionDiff{}},
		"GET /v1/projects/{project}/freight/{name}/compare/{other}":        {resp: freightComparison{}},
	}
	for path, t := range kindTypes {
		m["GET /v1/projects/{project}/"+path] = bodies{resp: listTypes[path]}
		m["GET /v1/projects/{project}/"+path+"/{name}"] = bodies{resp: t}
	}
	return m
}

var pathParam = regexp.MustCompile(`\{([a-zA-Z]+)\}`)

var queryDocs = map[string]string{
	"limit":        "page size (default 100, at most 1000)",
	"continue":     "the metadata.continue token of the previous page (of the same sort order)",
	"sort":         "order of the list: newest (default: by creation time, newest first, then by name), oldest, or name",
	"warehouse":    "only objects of (freight) or requesting from (stages) this warehouse",
	"stage":        "freight: only freight available to promote into this stage; promotions: only promotions of this stage",
	"phase":        "only promotions in this phase",
	"freight":      "only promotions of this freight",
	"verifiedIn":   "only freight verified in this stage",
	"currentlyIn":  "only freight this stage uses now",
	"project":      "only dead letters of this project",
	"actor":        "audit: only records of this actor",
	"action":       "audit: only records of this action (apply, promote, approve, override, rollback, window-wait, …)",
	"object":       "audit: only records whose object starts with this",
	"since":        "audit: only records at or after this RFC 3339 time",
	"until":        "audit: only records at or before this RFC 3339 time",
	"before":       "audit: only records older than this sequence (the before of the previous page)",
	"status":       "notifications: only deliveries in this status (pending, sent, dead)",
	"subscription": "notifications: only deliveries of this subscription",
	"dryRun":       "true: run the steps in a scratch work tree up to the first with effects outside it, and answer 200 with a PromotionDryRun (stage, freight, phase, steps, outputs, stoppedAt, diffs[]{repoURL, path, branch, base, files, patch}); nothing is stored, pushed or published",
}

// schemaGen generates component schemas from Go types, with one name per
// type (prefixed by its package when two packages use the same name).
type schemaGen struct {
	gen     *openapi3gen.Generator
	schemas openapi3.Schemas
	names   map[reflect.Type]string
	taken   map[string]reflect.Type
}

// Wire forms of types that marshal themselves, inlined where used.
var (
	timeType        = reflect.TypeFor[model.Time]()
	durationType    = reflect.TypeFor[model.Duration]()
	intOrStringType = reflect.TypeFor[model.IntOrString]()
)

func newSchemaGen() *schemaGen {
	g := &schemaGen{schemas: openapi3.Schemas{}, names: map[reflect.Type]string{}, taken: map[string]reflect.Type{}}
	g.gen = openapi3gen.NewGenerator(
		openapi3gen.CreateComponentSchemas(openapi3gen.ExportComponentSchemasOptions{ExportComponentSchemas: true, ExportTopLevelSchema: true, ExportGenerics: true}),
		openapi3gen.CreateTypeNameGenerator(g.name),
		openapi3gen.SchemaCustomizer(customize),
	)
	return g
}

// name is a type's component name ("" inlines the type).
func (g *schemaGen) name(t reflect.Type) string {
	switch t {
	case timeType, durationType, intOrStringType:
		return ""
	}
	if n, ok := g.names[t]; ok {
		return n
	}
	n := t.Name()
	if i := strings.Index(n, "["); i >= 0 { // listOf[path.T]
		elem := n[i+1 : len(n)-1]
		elem = elem[strings.LastIndex(elem, ".")+1:]
		n = exported(elem) + "List"
	}
	n = exported(n)
	if other, ok := g.taken[n]; ok && other != t {
		pkg := t.PkgPath()
		n = exported(pkg[strings.LastIndex(pkg, "/")+1:]) + n
	}
	g.names[t], g.taken[n] = n, t
	return n
}

func exported(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// customize gives types that marshal themselves their wire form, and
// lets every list, map and pointer be null (Go writes nil ones as null).
func customize(_ string, t reflect.Type, _ reflect.StructTag, s *openapi3.Schema) error {
	switch t {
	case timeType:
		s.Type, s.Format, s.Nullable, s.Properties = &openapi3.Types{"string"}, "date-time", true, nil
	case durationType:
		s.Type, s.Properties = &openapi3.Types{"string"}, nil
		s.Description = "a Go duration such as 5m0s"
	case intOrStringType:
		s.Type, s.Properties = nil, nil
		s.OneOf = openapi3.SchemaRefs{openapi3.NewIntegerSchema().NewRef(), openapi3.NewStringSchema().NewRef()}
	}
	if t.Kind() != reflect.Struct && t.Implements(textMarshaler) {
		s.Type, s.Format, s.Min, s.Max = &openapi3.Types{"string"}, "", nil, nil
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Map, reflect.Pointer, reflect.Interface:
		s.Nullable = true
	}
	return nil
}

var textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()

// ref returns the schema of v's type.
func (g *schemaGen) ref(v any) (*openapi3.SchemaRef, error) {
	if _, ok := v.(anyJSON); ok {
		return openapi3.NewSchemaRef("", &openapi3.Schema{}), nil
	}
	return g.gen.NewSchemaRefForValue(v, g.schemas)
}

func jsonContent(ref *openapi3.SchemaRef) openapi3.Content {
	return openapi3.NewContentWithJSONSchemaRef(ref)
}

func buildOpenAPI(routes []route) (*openapi3.T, error) {
	g := newSchemaGen()
	g.names[reflect.TypeFor[apiError]()], g.taken["Error"] = "Error", reflect.TypeFor[apiError]()
	errRef, err := g.ref(apiError{})
	if err != nil {
		return nil, err
	}
	errorResp := func(desc string) *openapi3.ResponseRef {
		return &openapi3.ResponseRef{Value: openapi3.NewResponse().WithDescription(desc).WithContent(jsonContent(errRef))}
	}
	all := routeBodies()
	doc := &openapi3.T{
		OpenAPI: "3.0.3",
		Info: &openapi3.Info{
			Title:       "Caravan API",
			Version:     "v1",
			Description: "Caravan's REST API: Kargo's resources and actions over NATS JetStream. Errors are {code, message, details[]}. Lists are newest first unless ?sort= says otherwise.",
		},
		Servers:  openapi3.Servers{{URL: "/"}},
		Paths:    openapi3.NewPaths(),
		Security: openapi3.SecurityRequirements{{"bearer": []string{}}},
		Components: &openapi3.Components{
			SecuritySchemes: openapi3.SecuritySchemes{"bearer": &openapi3.SecuritySchemeRef{Value: &openapi3.SecurityScheme{Type: "http", Scheme: "bearer"}}},
			Schemas:         g.schemas,
		},
	}
	for _, rt := range routes {
		key := rt.method + " " + rt.path
		b, typed := all[key]
		if !typed && !rt.stream && rt.path != "/metrics" {
			return nil, fmt.Errorf("route %s has no body types in routeBodies", key)
		}
		op := openapi3.NewOperation()
		op.OperationID = operationID(rt)
		op.Summary = rt.summary
		op.Description = "Access: " + accessNames[rt.access] + "."
		op.Tags = []string{tagOf(rt.path)}
		for _, m := range pathParam.FindAllStringSubmatch(rt.path, -1) {
			op.AddParameter(openapi3.NewPathParameter(m[1]).WithSchema(openapi3.NewStringSchema()))
		}
		for _, q := range rt.query {
			p := openapi3.NewQueryParameter(q).WithDescription(queryDocs[q]).WithSchema(openapi3.NewStringSchema())
			switch q {
			case "limit":
				p.Schema = openapi3.NewIntegerSchema().WithMin(1).WithMax(maxLimit).NewRef()
			case "sort":
				p.Schema = openapi3.NewStringSchema().WithEnum(anySlice(sortOrders)...).NewRef()
			}
			op.AddParameter(p)
		}
		if rt.idempotent {
			op.AddParameter(openapi3.NewHeaderParameter(HeaderIdempotencyKey).
				WithDescription("the same key (same caller, same route, same body) within 24h returns the first answer (Idempotent-Replayed: true) instead of acting again; 409 while the first runs, 422 with another body").
				WithSchema(openapi3.NewStringSchema().WithMaxLength(255)))
		}
		if rt.stream {
			op.AddParameter(openapi3.NewHeaderParameter("Last-Event-ID").WithDescription("resume after this event id").WithSchema(openapi3.NewStringSchema()))
		}
		status := rt.status
		if status == 0 {
			status = http.StatusOK
		}
		success := openapi3.NewResponse().WithDescription("success")
		switch {
		case rt.stream:
			success.WithContent(openapi3.Content{"text/event-stream": openapi3.NewMediaType().WithSchema(openapi3.NewStringSchema())})
		case rt.path == "/metrics":
			success.WithContent(openapi3.Content{"text/plain": openapi3.NewMediaType().WithSchema(openapi3.NewStringSchema())})
		default:
			ref, err := g.ref(b.resp)
			if err != nil {
				return nil, fmt.Errorf("%s: answer: %w", key, err)
			}
			success.WithContent(jsonContent(ref))
		}
		op.AddResponse(status, success)
		if b.alt != nil && status != http.StatusOK {
			ref, err := g.ref(b.alt)
			if err != nil {
				return nil, fmt.Errorf("%s: answer: %w", key, err)
			}
			op.AddResponse(http.StatusOK, openapi3.NewResponse().WithDescription("success (dry run)").WithContent(jsonContent(ref)))
		}
		op.AddResponse(http.StatusBadRequest, errorResp("invalid input").Value)
		if rt.access != public {
			op.Responses.Set("401", errorResp("missing or invalid bearer token"))
			op.Responses.Set("403", errorResp("the caller's role does not allow this"))
		}
		if strings.Contains(rt.path, "{") {
			op.Responses.Set("404", errorResp("not found"))
		}
		op.Responses.Set("default", errorResp("any other error"))
		if rt.access == public {
			op.Security = &openapi3.SecurityRequirements{}
		}
		if rt.body != "" {
			ref, err := g.ref(b.req)
			if err != nil {
				return nil, fmt.Errorf("%s: request: %w", key, err)
			}
			content := jsonContent(ref)
			if rt.path == "/v1/resources" {
				content["application/yaml"] = openapi3.NewMediaType().WithSchema(openapi3.NewStringSchema())
			}
			rb := openapi3.NewRequestBody().WithDescription(rt.body).WithContent(content)
			rb.Required = rt.method != http.MethodDelete || rt.path == "/v1/resources"
			if rt.optionalBody {
				rb.Required = false
			}
			op.RequestBody = &openapi3.RequestBodyRef{Value: rb}
		}
		doc.AddOperation(rt.path, rt.method, op)
	}
	return doc, nil
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func operationID(rt route) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(rt.method))
	for _, part := range strings.Split(rt.path, "/") {
		part = strings.Trim(part, "{}")
		part = strings.ReplaceAll(part, "-", "")
		part = strings.ReplaceAll(part, ".", "")
		if part == "" {
			continue
		}
		b.WriteString(strings.ToUpper(part[:1]) + part[1:])
	}
	return b.String()
}

func tagOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case parts[0] != "v1":
		return "operations"
	case len(parts) >= 4 && parts[1] == "projects":
		return parts[3]
	case len(parts) >= 2:
		return parts[1]
	}
	return "v1"
}
