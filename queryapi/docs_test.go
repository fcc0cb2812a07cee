package queryapi

import (
	"bytes"
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/clickagg/clickagg"
)

var docsHTTPMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// TestOpenAPISpecValid checks the embedded document as plain JSON, apart
// from the page's parser: OpenAPI 3.0.x, operations complete, references
// resolvable, path templates matched by path parameters.
func TestOpenAPISpecValid(t *testing.T) {
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(openAPISpec))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("openapi.json is not valid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("openapi.json: data after the document")
	}
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.0.") {
		t.Errorf("openapi = %q, want 3.0.x", v)
	}
	info, _ := doc["info"].(map[string]any)
	if info["title"] == nil || info["version"] == nil {
		t.Errorf("info needs title and version: %v", info)
	}

	// Every $ref resolves within the document.
	var refs int
	docsWalk(doc, "#", func(ptr string, obj map[string]any) {
		ref, ok := obj["$ref"]
		if !ok {
			return
		}
		refs++
		s, _ := ref.(string)
		if !strings.HasPrefix(s, "#/") {
			t.Errorf("%s: $ref %v is not local to the document", ptr, ref)
			return
		}
		if _, err := docsPointer(doc, s); err != nil {
			t.Errorf("%s: $ref %q: %v", ptr, s, err)
		}
	})
	if refs == 0 {
		t.Error("no $ref at all: the shared parameters should be referenced")
	}

	declared := map[string]bool{}
	for _, tg := range docsSlice(doc["tags"]) {
		declared[docsObj(tg)["name"].(string)] = true
	}
	opIDs := map[string]string{}
	paths := docsObj(doc["paths"])
	if len(paths) == 0 {
		t.Fatal("no paths")
	}
	for path, item := range paths {
		if !strings.HasPrefix(path, "/") {
			t.Errorf("path %q does not start with /", path)
		}
		templ := map[string]bool{}
		for _, m := range regexp.MustCompile(`\{([^}]+)\}`).FindAllStringSubmatch(path, -1) {
			templ[m[1]] = true
		}
		var ops int
		for _, method := range docsHTTPMethods {
			raw, ok := docsObj(item)[method]
			if !ok {
				continue
			}
			ops++
			op := docsObj(raw)
			name := strings.ToUpper(method) + " " + path
			if s, _ := op["summary"].(string); strings.TrimSpace(s) == "" {
				t.Errorf("%s: no summary", name)
			}
			if id, _ := op["operationId"].(string); id != "" {
				if other, dup := opIDs[id]; dup {
					t.Errorf("%s: operationId %q also used by %s", name, id, other)
				}
				opIDs[id] = name
			}
			tags := docsSlice(op["tags"])
			if len(tags) == 0 {
				t.Errorf("%s: no tag", name)
			}
			for _, tg := range tags {
				if !declared[tg.(string)] {
					t.Errorf("%s: tag %q is not declared in tags", name, tg)
				}
			}
			responses := docsObj(op["responses"])
			if len(responses) == 0 {
				t.Errorf("%s: no responses", name)
			}
			for code, r := range responses {
				if code != "default" && !regexp.MustCompile(`^[1-5]([0-9]{2}|XX)$`).MatchString(code) {
					t.Errorf("%s: response code %q", name, code)
				}
				r, err := docsDeref(doc, r)
				if err != nil {
					continue // reported above
				}
				if s, _ := docsObj(r)["description"].(string); s == "" {
					t.Errorf("%s: response %s has no description (required by OpenAPI)", name, code)
				}
			}
			// Path parameters and the template agree.
			// (Operation parameters may override path-level ones; within
			// one list a name may appear once per location.)
			inPath := map[string]bool{}
			for level, list := range [][]any{docsSlice(docsObj(item)["parameters"]), docsSlice(op["parameters"])} {
				seen := map[string]bool{}
				for _, p := range list {
					p, err := docsDeref(doc, p)
					if err != nil {
						continue // reported above
					}
					po := docsObj(p)
					pname, _ := po["name"].(string)
					in, _ := po["in"].(string)
					if pname == "" || in == "" {
						t.Errorf("%s: parameter without name or in: %v", name, po)
						continue
					}
					if seen[in+" "+pname] {
						t.Errorf("%s: parameter %s in %s twice (level %d)", name, pname, in, level)
					}
					seen[in+" "+pname] = true
					if in == "path" {
						inPath[pname] = true
						if po["required"] != true {
							t.Errorf("%s: path parameter %s must be required", name, pname)
						}
					}
					if po["schema"] == nil && po["content"] == nil {
						t.Errorf("%s: parameter %s has no schema", name, pname)
					}
				}
			}
			for p := range templ {
				if !inPath[p] {
					t.Errorf("%s: {%s} has no path parameter", name, p)
				}
			}
			for p := range inPath {
				if !templ[p] {
					t.Errorf("%s: path parameter %s is not in the path", name, p)
				}
			}
		}
		if ops == 0 {
			t.Errorf("path %s has no operation", path)
		}
	}

	// The page's own parser agrees with the document.
	sp, err := SpecPaths()
	if err != nil {
		t.Fatal(err)
	}
	if len(sp) != len(paths) {
		t.Errorf("SpecPaths has %d paths, the document %d", len(sp), len(paths))
	}
}

// TestOpenAPIQueryErrorsDocumented: every operation with query parameters
// documents its 400 answer as a ParamError ({"error","param"}).
func TestOpenAPIQueryErrorsDocumented(t *testing.T) {
	var doc map[string]any
	if err := json.Unmarshal(openAPISpec, &doc); err != nil {
		t.Fatal(err)
	}
	for path, item := range docsObj(doc["paths"]) {
		for _, method := range docsHTTPMethods {
			raw, ok := docsObj(item)[method]
			if !ok {
				continue
			}
			op := docsObj(raw)
			var query bool
			for _, p := range docsSlice(op["parameters"]) {
				p, err := docsDeref(doc, p)
				if err == nil && docsObj(p)["in"] == "query" {
					query = true
				}
			}
			if !query {
				continue
			}
			r400, ok := docsObj(op["responses"])["400"]
			if !ok {
				t.Errorf("%s %s: has query parameters but no 400 answer", strings.ToUpper(method), path)
				continue
			}
			r, err := docsDeref(doc, r400)
			if err != nil {
				t.Fatal(err)
			}
			schema := docsObj(docsObj(docsObj(docsObj(r)["content"])["application/json"])["schema"])
			if schema["$ref"] != "#/components/schemas/ParamError" {
				t.Errorf("%s %s: 400 schema is %v, want the ParamError schema", strings.ToUpper(method), path, schema)
			}
		}
	}
}

func TestDocsRoutes(t *testing.T) {
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	registerDocs(app)

	resp, err := app.Test(httptest.NewRequest(http.MethodGet, "/openapi.json", nil))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/openapi.json: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("/openapi.json Content-Type = %q", ct)
	}
	if !bytes.Equal(body, openAPISpec) {
		t.Error("/openapi.json does not serve the embedded document")
	}

	resp, err = app.Test(httptest.NewRequest(http.MethodGet, "/docs", nil))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/docs: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("/docs Content-Type = %q", ct)
	}
	page := string(body)
	text := html.UnescapeString(page)
	paths, err := SpecPaths()
	if err != nil {
		t.Fatal(err)
	}
	for path, methods := range paths {
		if !strings.Contains(page, ">"+path+"<") {
			t.Errorf("/docs does not show path %s", path)
		}
		for _, m := range methods {
			if !strings.Contains(page, ">"+m+"<") {
				t.Errorf("/docs does not show method %s", m)
			}
		}
	}
	for _, want := range []string{
		"<title>clickagg API",
		"Retry-After",                   // a response header
		"application/x-ndjson",          // a request body media type
		`"spend_micros"`,                // an example, indented JSON
		`id="schema-Event"`,             // the schemas section
		`<a class="ref" href="#schema-`, // links to it
		"country=a&country=b",           // repeatable filters explained
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/docs lacks %q", want)
		}
	}
	// Self-contained: nothing fetched from anywhere.
	for _, banned := range []string{"<script", "<link", " src=", "@import", "url("} {
		if strings.Contains(page, banned) {
			t.Errorf("/docs contains %q: the page must not load anything", banned)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
}

// TestEveryRouteDocumented compares the routes of the full app (every
// optional part switched on) with the document, both ways: every registered
// route is documented and every documented route is registered.
func TestEveryRouteDocumented(t *testing.T) {
	app := New(Options{
		Ingest:          func(c *fiber.Ctx) error { return nil },
		IngestStatus:    func() any { return nil },
		Metrics:         docsNopMetrics{},
		Direct:          docsNopMetrics{},
		CacheStats:      func() any { return nil },
		ReconcileStatus: func() any { return nil },
		Prometheus:      http.NotFoundHandler(),
	})
	spec, err := SpecPaths()
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for path, methods := range spec {
		for _, m := range methods {
			documented[m+" "+path] = true
		}
	}
	registered := map[string]bool{}
	for _, r := range app.GetRoutes(true) { // true: without middleware (Use)
		if r.Method == fiber.MethodHead || r.Path == "" || r.Path == "*" || r.Path == "/*" {
			continue // HEAD comes with every GET; catch-alls are not routes
		}
		registered[r.Method+" "+docsOpenAPIPath(r.Path)] = true
	}
	var undocumented, unregistered []string
	for k := range registered {
		if !documented[k] {
			undocumented = append(undocumented, k)
		}
	}
	for k := range documented {
		if !registered[k] {
			unregistered = append(unregistered, k)
		}
	}
	sort.Strings(undocumented)
	sort.Strings(unregistered)
	for _, k := range undocumented {
		t.Errorf("route %s is served but not in queryapi/openapi.json", k)
	}
	for _, k := range unregistered {
		t.Errorf("route %s is in queryapi/openapi.json but New does not register it", k)
	}
}

func TestDocsOpenAPIPath(t *testing.T) {
	for in, want := range map[string]string{
		"/healthz":                         "/healthz",
		"/v1/metrics/:country/:ad_format":  "/v1/metrics/{country}/{ad_format}",
		"/v1/ads/:ad_id/series":            "/v1/ads/{ad_id}/series",
		"/v1/ads/:ad_id<minLen(1)>/series": "/v1/ads/{ad_id}/series",
		"/v1/x/:opt?":                      "/v1/x/{opt}",
	} {
		if got := docsOpenAPIPath(in); got != want {
			t.Errorf("docsOpenAPIPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMdLite(t *testing.T) {
	got := string(mdLite("a `x<y>` **b**\nc\n\n- one\n- `two`"))
	want := "<p>a <code>x&lt;y&gt;</code> <strong>b</strong> c</p><ul><li>one</li><li><code>two</code></li></ul>"
	if got != want {
		t.Errorf("mdLite = %q, want %q", got, want)
	}
}

// docsNopMetrics stands in for the metrics services: the routes only need
// to exist.
type docsNopMetrics struct{}

func (docsNopMetrics) Metrics(context.Context, clickagg.MetricsQuery) (*clickagg.MetricsResult, error) {
	return nil, nil
}

func (docsNopMetrics) Series(context.Context, clickagg.SeriesQuery) (*clickagg.SeriesResult, error) {
	return nil, nil
}

func (docsNopMetrics) TopAds(context.Context, clickagg.TopQuery) (*clickagg.TopResult, error) {
	return nil, nil
}

var docsFiberParam = regexp.MustCompile(`:([A-Za-z0-9_]+)(<[^>]*>)?\??`)

// docsOpenAPIPath turns Fiber's "/v1/ads/:ad_id/series" into OpenAPI's
// "/v1/ads/{ad_id}/series", dropping constraints and optional marks.
func docsOpenAPIPath(p string) string {
	return docsFiberParam.ReplaceAllString(p, "{$1}")
}

// docsWalk calls fn for every JSON object in v with its JSON pointer.
func docsWalk(v any, ptr string, fn func(ptr string, obj map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		fn(ptr, v)
		for k, e := range v {
			docsWalk(e, ptr+"/"+strings.NewReplacer("~", "~0", "/", "~1").Replace(k), fn)
		}
	case []any:
		for i, e := range v {
			docsWalk(e, ptr+"/"+strconv.Itoa(i), fn)
		}
	}
}

// docsPointer resolves a local JSON pointer ("#/components/schemas/Event").
func docsPointer(doc any, ref string) (any, error) {
	cur := doc
	for _, tok := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		switch c := cur.(type) {
		case map[string]any:
			next, ok := c[tok]
			if !ok {
				return nil, &docsRefError{tok}
			}
			cur = next
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				return nil, &docsRefError{tok}
			}
			cur = c[i]
		default:
			return nil, &docsRefError{tok}
		}
	}
	return cur, nil
}

type docsRefError struct{ tok string }

func (e *docsRefError) Error() string { return "no " + strconv.Quote(e.tok) }

// docsDeref follows $ref chains.
func docsDeref(doc, v any) (any, error) {
	for range 10 {
		ref, ok := docsObj(v)["$ref"].(string)
		if !ok {
			return v, nil
		}
		var err error
		if v, err = docsPointer(doc, ref); err != nil {
			return nil, err
		}
	}
	return nil, &docsRefError{"(too deep)"}
}

func docsObj(v any) map[string]any { m, _ := v.(map[string]any); return m }

func docsSlice(v any) []any { s, _ := v.([]any); return s }
