package queryapi

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"html"
	"html/template"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/gofiber/fiber/v2"
)

// openAPISpec is the API's OpenAPI 3.0 document, served at GET /openapi.json
// and rendered at GET /docs. Edit openapi.json when a route changes;
// TestEveryRouteDocumented fails until both agree.
//
//go:embed openapi.json
var openAPISpec []byte

// registerDocs adds GET /openapi.json (the embedded document) and GET /docs
// (the document rendered as one self-contained HTML page). The page is
// rendered once, when registerDocs first runs.
func registerDocs(app *fiber.App) {
	page, pageErr := docsPage()
	app.Get("/openapi.json", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSONCharsetUTF8)
		return c.Send(openAPISpec)
	})
	app.Get("/docs", func(c *fiber.Ctx) error {
		if pageErr != nil {
			return fmt.Errorf("docs: %w", pageErr)
		}
		c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
		// The page needs nothing but its own inline style sheet.
		c.Set(fiber.HeaderContentSecurityPolicy, "default-src 'none'; style-src 'unsafe-inline'")
		c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
		return c.Send(page)
	})
}

// SpecPaths returns every path of the embedded OpenAPI document with its
// methods in upper case ("GET", "POST"), for tests that compare the document
// with the registered routes.
func SpecPaths() (map[string][]string, error) {
	s, err := loadSpec()
	if err != nil {
		return nil, err
	}
	out := make(map[string][]string, len(s.Paths.keys))
	for _, p := range s.Paths.keys {
		for _, m := range s.Paths.vals[p].operations() {
			out[p] = append(out[p], strings.ToUpper(m.method))
		}
	}
	return out, nil
}

// The parts of an OpenAPI 3.0 document that the page renders.
type (
	oaSpec struct {
		OpenAPI string `json:"openapi"`
		Info    struct {
			Title       string `json:"title"`
			Version     string `json:"version"`
			Description string `json:"description"`
		} `json:"info"`
		Servers []struct {
			URL         string `json:"url"`
			Description string `json:"description"`
		} `json:"servers"`
		Tags []struct {
			Name        string `json:"name"`
			Description string `json:"description"`
		} `json:"tags"`
		Paths      oaMap[oaPathItem] `json:"paths"`
		Components struct {
			Schemas       oaMap[*oaSchema]     `json:"schemas"`
			Parameters    oaMap[oaParameter]   `json:"parameters"`
			Responses     oaMap[oaResponse]    `json:"responses"`
			RequestBodies oaMap[oaRequestBody] `json:"requestBodies"`
			Examples      oaMap[oaExample]     `json:"examples"`
			Headers       oaMap[oaHeader]      `json:"headers"`
		} `json:"components"`
	}
	oaPathItem struct {
		Parameters []oaParameter `json:"parameters"`
		Get        *oaOperation  `json:"get"`
		Put        *oaOperation  `json:"put"`
		Post       *oaOperation  `json:"post"`
		Delete     *oaOperation  `json:"delete"`
		Options    *oaOperation  `json:"options"`
		Head       *oaOperation  `json:"head"`
		Patch      *oaOperation  `json:"patch"`
		Trace      *oaOperation  `json:"trace"`
	}
	oaOperation struct {
		Tags        []string          `json:"tags"`
		Summary     string            `json:"summary"`
		Description string            `json:"description"`
		OperationID string            `json:"operationId"`
		Deprecated  bool              `json:"deprecated"`
		Parameters  []oaParameter     `json:"parameters"`
		RequestBody *oaRequestBody    `json:"requestBody"`
		Responses   oaMap[oaResponse] `json:"responses"`
		method      string            // set by operations
	}
	oaParameter struct {
		Ref         string           `json:"$ref"`
		Name        string           `json:"name"`
		In          string           `json:"in"`
		Description string           `json:"description"`
		Required    bool             `json:"required"`
		Deprecated  bool             `json:"deprecated"`
		Style       string           `json:"style"`
		Explode     *bool            `json:"explode"`
		Schema      *oaSchema        `json:"schema"`
		Example     json.RawMessage  `json:"example"`
		Examples    oaMap[oaExample] `json:"examples"`
	}
	oaRequestBody struct {
		Ref         string             `json:"$ref"`
		Description string             `json:"description"`
		Required    bool               `json:"required"`
		Content     oaMap[oaMediaType] `json:"content"`
	}
	oaResponse struct {
		Ref         string             `json:"$ref"`
		Description string             `json:"description"`
		Headers     oaMap[oaHeader]    `json:"headers"`
		Content     oaMap[oaMediaType] `json:"content"`
	}
	oaHeader struct {
		Ref         string    `json:"$ref"`
		Description string    `json:"description"`
		Schema      *oaSchema `json:"schema"`
	}
	oaMediaType struct {
		Schema   *oaSchema        `json:"schema"`
		Example  json.RawMessage  `json:"example"`
		Examples oaMap[oaExample] `json:"examples"`
	}
	oaExample struct {
		Ref         string          `json:"$ref"`
		Summary     string          `json:"summary"`
		Description string          `json:"description"`
		Value       json.RawMessage `json:"value"`
	}
	oaSchema struct {
		Ref         string            `json:"$ref"`
		Type        string            `json:"type"`
		Format      string            `json:"format"`
		Description string            `json:"description"`
		Enum        []json.RawMessage `json:"enum"`
		Default     json.RawMessage   `json:"default"`
		Pattern     string            `json:"pattern"`
		Minimum     *float64          `json:"minimum"`
		Maximum     *float64          `json:"maximum"`
		MinLength   *int              `json:"minLength"`
		MaxLength   *int              `json:"maxLength"`
		MaxItems    *int              `json:"maxItems"`
		Items       *oaSchema         `json:"items"`
		OneOf       []*oaSchema       `json:"oneOf"`
		AnyOf       []*oaSchema       `json:"anyOf"`
		AllOf       []*oaSchema       `json:"allOf"`
		Required    []string          `json:"required"`
		Properties  oaMap[*oaSchema]  `json:"properties"`
		// AdditionalProperties is a schema or a boolean.
		AdditionalProperties json.RawMessage `json:"additionalProperties"`
		Example              json.RawMessage `json:"example"`
	}
)

// oaMap is a JSON object that keeps its keys in document order, so that the
// page lists paths, responses and examples as the document's authors wrote
// them.
type oaMap[T any] struct {
	keys []string
	vals map[string]T
}

func (m *oaMap[T]) UnmarshalJSON(b []byte) error {
	m.keys, m.vals = nil, map[string]T{}
	if string(bytes.TrimSpace(b)) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil {
		return err
	} else if t != json.Delim('{') {
		return fmt.Errorf("want a JSON object, got %v", t)
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		k := t.(string) // object keys are always strings
		var v T
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		if _, dup := m.vals[k]; !dup {
			m.keys = append(m.keys, k)
		}
		m.vals[k] = v
	}
	_, err := dec.Token() // the closing brace
	return err
}

// operations returns the item's operations in a fixed method order.
func (p oaPathItem) operations() []*oaOperation {
	var ops []*oaOperation
	for _, m := range []struct {
		name string
		op   *oaOperation
	}{{"get", p.Get}, {"put", p.Put}, {"post", p.Post}, {"delete", p.Delete}, {"options", p.Options}, {"head", p.Head}, {"patch", p.Patch}, {"trace", p.Trace}} {
		if m.op != nil {
			m.op.method = m.name
			ops = append(ops, m.op)
		}
	}
	return ops
}

// loadSpec parses the embedded document once.
var loadSpec = sync.OnceValues(func() (*oaSpec, error) {
	var s oaSpec
	if err := json.Unmarshal(openAPISpec, &s); err != nil {
		return nil, fmt.Errorf("openapi.json: %w", err)
	}
	return &s, nil
})

// docsPage renders the page once.
var docsPage = sync.OnceValues(func() ([]byte, error) {
	s, err := loadSpec()
	if err != nil {
		return nil, err
	}
	v, err := buildDocsView(s)
	if err != nil {
		return nil, fmt.Errorf("openapi.json: %w", err)
	}
	var b bytes.Buffer
	if err := docsTemplate.Execute(&b, v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
})

// The page's view of the document: every reference resolved, every text
// ready to print.
type (
	docsView struct {
		Title, Version string
		Description    template.HTML
		Servers        []docsServer
		Tags           []docsTag
		Schemas        []docsSchema
	}
	docsSchema struct {
		ID, Name    string
		Description template.HTML
		Type        template.HTML // for schemas that are not objects
		Props       []docsParam   // Required, Type and Description used
		Example     string
	}
	docsServer struct {
		URL         string
		Description template.HTML
	}
	docsTag struct {
		Name        string
		Description template.HTML
		Ops         []docsOp
	}
	docsOp struct {
		ID, Method, Path, Summary string
		Description               template.HTML
		Deprecated                bool
		Params                    []docsParam
		Body                      *docsBody
		Responses                 []docsResponse
	}
	docsParam struct {
		Name, In    string
		Required    bool
		Type        template.HTML
		Description template.HTML
		Example     string
	}
	docsBody struct {
		Required    bool
		Description template.HTML
		Content     []docsContent
	}
	docsContent struct {
		MediaType string
		Schema    template.HTML
		Examples  []docsExample
	}
	docsExample struct {
		Title, Text string
	}
	docsResponse struct {
		Code        string
		Description template.HTML
		Headers     []docsParam
		Content     []docsContent
	}
)

// docsResolver resolves local references of s.
type docsResolver struct{ s *oaSpec }

func (r docsResolver) name(ref, kind string) (string, error) {
	prefix := "#/components/" + kind + "/"
	if !strings.HasPrefix(ref, prefix) {
		return "", fmt.Errorf("reference %q: want %s...", ref, prefix)
	}
	return strings.NewReplacer("~1", "/", "~0", "~").Replace(strings.TrimPrefix(ref, prefix)), nil
}

// resolve follows ref (when not empty) into the component map m.
func resolve[T any](r docsResolver, ref, kind string, m oaMap[T], v T) (T, error) {
	for range 10 { // a chain of references, but no loop
		if ref == "" {
			return v, nil
		}
		n, err := r.name(ref, kind)
		if err != nil {
			return v, err
		}
		var ok bool
		if v, ok = m.vals[n]; !ok {
			return v, fmt.Errorf("reference %q: no such component", ref)
		}
		ref = refOf(v)
	}
	return v, fmt.Errorf("reference %q: too deep", ref)
}

func refOf(v any) string {
	switch v := v.(type) {
	case oaParameter:
		return v.Ref
	case oaResponse:
		return v.Ref
	case oaRequestBody:
		return v.Ref
	case oaExample:
		return v.Ref
	case oaHeader:
		return v.Ref
	case *oaSchema:
		if v != nil {
			return v.Ref
		}
	}
	return ""
}

func buildDocsView(s *oaSpec) (*docsView, error) {
	r := docsResolver{s}
	v := &docsView{Title: s.Info.Title, Version: s.Info.Version, Description: mdLite(s.Info.Description)}
	for _, sv := range s.Servers {
		v.Servers = append(v.Servers, docsServer{sv.URL, mdLite(sv.Description)})
	}
	tagIndex := map[string]int{}
	for _, t := range s.Tags {
		tagIndex[t.Name] = len(v.Tags)
		v.Tags = append(v.Tags, docsTag{Name: t.Name, Description: mdLite(t.Description)})
	}
	for _, path := range s.Paths.keys {
		item := s.Paths.vals[path]
		for _, op := range item.operations() {
			d, err := r.op(path, item, op)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", strings.ToUpper(op.method), path, err)
			}
			tags := op.Tags
			if len(tags) == 0 {
				tags = []string{"other"}
			}
			for _, t := range tags {
				i, ok := tagIndex[t]
				if !ok {
					i = len(v.Tags)
					tagIndex[t] = i
					v.Tags = append(v.Tags, docsTag{Name: t})
				}
				v.Tags[i].Ops = append(v.Tags[i].Ops, d)
			}
		}
	}
	for _, name := range s.Components.Schemas.keys {
		ds, err := r.schema(name, s.Components.Schemas.vals[name])
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		v.Schemas = append(v.Schemas, ds)
	}
	return v, nil
}

// schema describes a component schema: its properties (those of every allOf
// part merged) or, for a scalar or a choice, its type.
func (r docsResolver) schema(name string, s *oaSchema) (docsSchema, error) {
	d := docsSchema{ID: schemaID(name), Name: name}
	var descs []string
	var walk func(s *oaSchema, depth int) error
	walk = func(s *oaSchema, depth int) error {
		s, err := resolve(r, refOf(s), "schemas", r.s.Components.Schemas, s)
		if err != nil || s == nil || depth > 8 {
			return err
		}
		if s.Description != "" {
			descs = append(descs, s.Description)
		}
		for _, part := range s.AllOf {
			if err := walk(part, depth+1); err != nil {
				return err
			}
		}
		required := map[string]bool{}
		for _, n := range s.Required {
			required[n] = true
		}
		for _, pn := range s.Properties.keys {
			ps := s.Properties.vals[pn]
			t, err := r.typeHTML(ps, 0)
			if err != nil {
				return fmt.Errorf("property %s: %w", pn, err)
			}
			desc := ps.Description
			if desc == "" { // a bare reference: the referenced schema's words
				if rs, err := resolve(r, ps.Ref, "schemas", r.s.Components.Schemas, ps); err == nil && rs != nil {
					desc = rs.Description
				}
			}
			d.Props = append(d.Props, docsParam{Name: pn, Required: required[pn], Type: t, Description: mdLite(desc)})
		}
		return nil
	}
	if err := walk(s, 0); err != nil {
		return d, err
	}
	d.Description = mdLite(strings.Join(descs, "\n\n"))
	if len(d.Props) == 0 {
		t, err := r.typeHTML(&oaSchema{Type: s.Type, Format: s.Format, Enum: s.Enum, Default: s.Default, Pattern: s.Pattern,
			Minimum: s.Minimum, Maximum: s.Maximum, MaxLength: s.MaxLength, Items: s.Items, OneOf: s.OneOf, AnyOf: s.AnyOf}, 0)
		if err != nil {
			return d, err
		}
		d.Type = t
	}
	if len(s.Example) > 0 {
		d.Example = exampleBlock(s.Example)
	}
	return d, nil
}

var nonID = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

func schemaID(name string) string { return "schema-" + nonID.ReplaceAllString(name, "-") }

func (r docsResolver) op(path string, item oaPathItem, op *oaOperation) (docsOp, error) {
	d := docsOp{
		Method: strings.ToUpper(op.method), Path: path, Summary: op.Summary,
		Description: mdLite(op.Description), Deprecated: op.Deprecated,
	}
	d.ID = "op-" + op.OperationID
	if op.OperationID == "" {
		d.ID = "op-" + op.method + strings.Trim(nonID.ReplaceAllString(path, "-"), "-")
	}

	// Operation parameters override path-level ones of the same name and place.
	var params []oaParameter
	seen := map[string]int{}
	for _, p := range append(append([]oaParameter(nil), item.Parameters...), op.Parameters...) {
		p, err := resolve(r, p.Ref, "parameters", r.s.Components.Parameters, p)
		if err != nil {
			return d, err
		}
		if i, ok := seen[p.In+" "+p.Name]; ok {
			params[i] = p
			continue
		}
		seen[p.In+" "+p.Name] = len(params)
		params = append(params, p)
	}
	for _, p := range params {
		dp, err := r.param(p)
		if err != nil {
			return d, fmt.Errorf("parameter %s: %w", p.Name, err)
		}
		d.Params = append(d.Params, dp)
	}

	if op.RequestBody != nil {
		b, err := resolve(r, op.RequestBody.Ref, "requestBodies", r.s.Components.RequestBodies, *op.RequestBody)
		if err != nil {
			return d, err
		}
		d.Body = &docsBody{Required: b.Required, Description: mdLite(b.Description)}
		if d.Body.Content, err = r.content(b.Content); err != nil {
			return d, fmt.Errorf("request body: %w", err)
		}
	}

	codes := append([]string(nil), op.Responses.keys...)
	sort.SliceStable(codes, func(i, j int) bool { // numeric codes in order, "default" last
		return codes[i] != "default" && (codes[j] == "default" || codes[i] < codes[j])
	})
	for _, code := range codes {
		resp, err := resolve(r, op.Responses.vals[code].Ref, "responses", r.s.Components.Responses, op.Responses.vals[code])
		if err != nil {
			return d, fmt.Errorf("response %s: %w", code, err)
		}
		dr := docsResponse{Code: code, Description: mdLite(resp.Description)}
		for _, name := range resp.Headers.keys {
			h, err := resolve(r, resp.Headers.vals[name].Ref, "headers", r.s.Components.Headers, resp.Headers.vals[name])
			if err != nil {
				return d, fmt.Errorf("response %s header %s: %w", code, name, err)
			}
			t, err := r.typeHTML(h.Schema, 0)
			if err != nil {
				return d, fmt.Errorf("response %s header %s: %w", code, name, err)
			}
			dr.Headers = append(dr.Headers, docsParam{Name: name, In: "header", Type: t, Description: mdLite(h.Description)})
		}
		if dr.Content, err = r.content(resp.Content); err != nil {
			return d, fmt.Errorf("response %s: %w", code, err)
		}
		d.Responses = append(d.Responses, dr)
	}
	return d, nil
}

func (r docsResolver) param(p oaParameter) (docsParam, error) {
	t, err := r.typeHTML(p.Schema, 0)
	if err != nil {
		return docsParam{}, err
	}
	s, err := resolve(r, refOf(p.Schema), "schemas", r.s.Components.Schemas, p.Schema)
	if err != nil {
		return docsParam{}, err
	}
	if s != nil && s.Type == "array" && (p.In == "query" || p.In == "") {
		// form style: explode (repeat the parameter) unless said otherwise.
		if p.Explode == nil || *p.Explode {
			t += template.HTML(`<div class="note">repeatable: <code>` + html.EscapeString(p.Name+"=a&"+p.Name+"=b") + `</code></div>`)
		} else {
			t += template.HTML(`<div class="note">comma-separated: <code>` + html.EscapeString(p.Name+"=a,b") + `</code></div>`)
		}
	}
	dp := docsParam{Name: p.Name, In: p.In, Required: p.Required, Type: t, Description: mdLite(p.Description)}
	var ex []string
	if len(p.Example) > 0 {
		ex = append(ex, exampleInline(p.Example))
	}
	for _, k := range p.Examples.keys {
		e, err := resolve(r, p.Examples.vals[k].Ref, "examples", r.s.Components.Examples, p.Examples.vals[k])
		if err != nil {
			return dp, err
		}
		ex = append(ex, exampleInline(e.Value))
	}
	dp.Example = strings.Join(ex, ", ")
	return dp, nil
}

func (r docsResolver) content(c oaMap[oaMediaType]) ([]docsContent, error) {
	var out []docsContent
	for _, mt := range c.keys {
		m := c.vals[mt]
		dc := docsContent{MediaType: mt}
		var err error
		if m.Schema != nil {
			if dc.Schema, err = r.typeHTML(m.Schema, 0); err != nil {
				return nil, fmt.Errorf("%s: %w", mt, err)
			}
		}
		if len(m.Example) > 0 {
			dc.Examples = append(dc.Examples, docsExample{Title: "Example", Text: exampleBlock(m.Example)})
		}
		for _, k := range m.Examples.keys {
			e, err := resolve(r, m.Examples.vals[k].Ref, "examples", r.s.Components.Examples, m.Examples.vals[k])
			if err != nil {
				return nil, fmt.Errorf("%s example %s: %w", mt, k, err)
			}
			title := e.Summary
			if title == "" {
				title = k
			}
			dc.Examples = append(dc.Examples, docsExample{Title: "Example: " + title, Text: exampleBlock(e.Value)})
		}
		if len(dc.Examples) == 0 && m.Schema != nil {
			// Fall back on the example of a referenced schema.
			s, err := resolve(r, m.Schema.Ref, "schemas", r.s.Components.Schemas, m.Schema)
			if err != nil {
				return nil, err
			}
			if len(s.Example) > 0 {
				dc.Examples = append(dc.Examples, docsExample{Title: "Example", Text: exampleBlock(s.Example)})
			}
		}
		out = append(out, dc)
	}
	return out, nil
}

// typeHTML describes a schema in a few words: its type and format, its
// enumeration, bounds, pattern and default; a reference to a composite
// schema is shown by the schema's name.
func (r docsResolver) typeHTML(s *oaSchema, depth int) (template.HTML, error) {
	if s == nil {
		return "", nil
	}
	if depth > 8 {
		return "…", nil
	}
	var b strings.Builder
	if s.Ref != "" {
		name, err := r.name(s.Ref, "schemas")
		if err != nil {
			return "", err
		}
		t, err := resolve(r, s.Ref, "schemas", r.s.Components.Schemas, s)
		if err != nil {
			return "", err
		}
		switch t.Type {
		case "string", "integer", "number", "boolean":
			return r.typeHTML(t, depth+1)
		}
		b.WriteString(`<a class="ref" href="#` + html.EscapeString(schemaID(name)) + `">` + html.EscapeString(name) + `</a>`)
		return template.HTML(b.String()), nil
	}
	alts := s.OneOf
	if len(alts) == 0 {
		alts = s.AnyOf
	}
	switch {
	case len(alts) > 0:
		for i, a := range alts {
			if i > 0 {
				b.WriteString(" or ")
			}
			t, err := r.typeHTML(a, depth+1)
			if err != nil {
				return "", err
			}
			b.WriteString(string(t))
		}
		return template.HTML(b.String()), nil
	case len(s.AllOf) == 1:
		return r.typeHTML(s.AllOf[0], depth+1)
	case s.Type == "array":
		t, err := r.typeHTML(s.Items, depth+1)
		if err != nil {
			return "", err
		}
		b.WriteString("array of " + string(t))
	case s.Type != "":
		b.WriteString(html.EscapeString(s.Type))
	default:
		b.WriteString("object")
	}
	if s.Format != "" {
		b.WriteString(" (" + html.EscapeString(s.Format) + ")")
	}
	var notes []string
	if len(s.Enum) > 0 {
		vals := make([]string, len(s.Enum))
		for i, e := range s.Enum {
			vals[i] = "<code>" + html.EscapeString(exampleInline(e)) + "</code>"
		}
		notes = append(notes, "one of "+strings.Join(vals, " "))
	}
	num := func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
	switch {
	case s.Minimum != nil && s.Maximum != nil:
		notes = append(notes, num(*s.Minimum)+" to "+num(*s.Maximum))
	case s.Minimum != nil:
		notes = append(notes, "≥ "+num(*s.Minimum))
	case s.Maximum != nil:
		notes = append(notes, "≤ "+num(*s.Maximum))
	}
	if s.MaxLength != nil {
		notes = append(notes, "at most "+strconv.Itoa(*s.MaxLength)+" bytes")
	}
	if s.Pattern != "" {
		notes = append(notes, "pattern <code>"+html.EscapeString(s.Pattern)+"</code>")
	}
	if len(s.Default) > 0 {
		notes = append(notes, "default <code>"+html.EscapeString(exampleInline(s.Default))+"</code>")
	}
	if len(notes) > 0 {
		b.WriteString(`<div class="note">` + strings.Join(notes, "; ") + `</div>`)
	}
	return template.HTML(b.String()), nil
}

// exampleInline prints a short example value: strings without quotes,
// arrays of scalars as a comma-separated list, anything else as compact JSON.
func exampleInline(raw json.RawMessage) string {
	var str string
	if json.Unmarshal(raw, &str) == nil {
		return str
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) == nil {
		parts := make([]string, len(list))
		for i, e := range list {
			parts[i] = exampleInline(e)
		}
		return strings.Join(parts, ", ")
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) == nil {
		return b.String()
	}
	return string(raw)
}

// exampleBlock prints an example body: a string as its text (an NDJSON body,
// say), anything else as indented JSON in the document's key order.
func exampleBlock(raw json.RawMessage) string {
	var str string
	if json.Unmarshal(raw, &str) == nil {
		return strings.TrimRight(str, "\n")
	}
	var b bytes.Buffer
	if json.Indent(&b, raw, "", "  ") == nil {
		return b.String()
	}
	return string(raw)
}

var (
	mdCode   = regexp.MustCompile("`([^`]+)`")
	mdStrong = regexp.MustCompile(`\*\*([^*]+)\*\*`)
)

// mdLite renders the little Markdown the document's descriptions use:
// paragraphs split by blank lines, "- " lists, `code` and **strong**.
// Everything else is escaped text.
func mdLite(s string) template.HTML {
	inline := func(t string) string {
		t = html.EscapeString(t)
		t = mdCode.ReplaceAllString(t, "<code>$1</code>")
		return mdStrong.ReplaceAllString(t, "<strong>$1</strong>")
	}
	var b strings.Builder
	for _, para := range strings.Split(strings.TrimSpace(strings.ReplaceAll(s, "\r\n", "\n")), "\n\n") {
		para = strings.TrimSpace(para)
		if para == "" {
			continue
		}
		lines := strings.Split(para, "\n")
		list := true
		for _, l := range lines {
			if !strings.HasPrefix(strings.TrimSpace(l), "- ") {
				list = false
				break
			}
		}
		if list {
			b.WriteString("<ul>")
			for _, l := range lines {
				b.WriteString("<li>" + inline(strings.TrimPrefix(strings.TrimSpace(l), "- ")) + "</li>")
			}
			b.WriteString("</ul>")
			continue
		}
		b.WriteString("<p>" + inline(strings.Join(lines, " ")) + "</p>")
	}
	return template.HTML(b.String())
}

var docsTemplate = template.Must(template.New("docs").Funcs(template.FuncMap{
	"lower": strings.ToLower,
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} {{.Version}}</title>
<style>
:root { --fg: #1d2330; --muted: #5b6475; --line: #dde2ea; --bg2: #f5f7fa; --accent: #2456c7; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); }
main { max-width: 1080px; margin: 0 auto; padding: 24px 20px 80px; }
h1 { font-size: 28px; margin: 8px 0 4px; }
h1 .version { font-size: 14px; color: var(--muted); font-weight: normal; margin-left: 8px; }
h2 { font-size: 22px; margin: 48px 0 4px; padding-bottom: 6px; border-bottom: 2px solid var(--line); text-transform: capitalize; }
h3 { font-size: 17px; margin: 0; }
h4 { font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); margin: 18px 0 6px; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
p { margin: 6px 0; }
code, pre { font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
code { background: var(--bg2); padding: 1px 4px; border-radius: 3px; }
pre { background: #0f1623; color: #e6edf7; padding: 12px 14px; border-radius: 6px; overflow-x: auto; margin: 6px 0 10px; }
nav { background: var(--bg2); border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; margin: 18px 0; columns: 2 320px; }
nav div { break-inside: avoid; margin: 4px 0 10px; }
nav strong { text-transform: capitalize; }
nav ul { list-style: none; margin: 2px 0; padding: 0; }
nav li { margin: 2px 0; }
.op { border: 1px solid var(--line); border-radius: 8px; margin: 18px 0; padding: 14px 18px; }
.op-head { display: flex; flex-wrap: wrap; align-items: baseline; gap: 10px; }
.path { font: 600 15px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.summary { color: var(--muted); }
.method { display: inline-block; min-width: 56px; text-align: center; font: 700 12px ui-monospace, monospace; padding: 3px 6px; border-radius: 4px; color: #fff; background: #66707f; }
.method.get { background: #2f7d4f; } .method.post { background: #2456c7; } .method.put { background: #9a6a00; }
.method.delete { background: #b3261e; } .method.patch { background: #7b3fb0; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; }
th, td { text-align: left; vertical-align: top; padding: 6px 8px; border-bottom: 1px solid var(--line); }
th { font-size: 12px; color: var(--muted); font-weight: 600; background: var(--bg2); }
td p:first-child { margin-top: 0; } td p:last-child { margin-bottom: 0; }
.note { color: var(--muted); font-size: 13px; }
.req { color: #b3261e; font-size: 12px; font-weight: 600; }
.ref { font-family: ui-monospace, monospace; font-weight: 600; }
.code { font: 700 14px ui-monospace, monospace; }
.code.c2 { color: #2f7d4f; } .code.c4 { color: #9a6a00; } .code.c5 { color: #b3261e; }
.mt { font-size: 13px; color: var(--muted); margin-top: 6px; }
details summary { cursor: pointer; color: var(--muted); font-size: 13px; margin-top: 4px; }
.deprecated { color: #b3261e; font-size: 12px; font-weight: 600; }
</style>
</head>
<body>
<main>
<h1>{{.Title}}<span class="version">{{.Version}}</span></h1>
<p class="note">OpenAPI document: <a href="/openapi.json">/openapi.json</a>{{range .Servers}} · server <code>{{.URL}}</code>{{end}}</p>
{{.Description}}
<nav>
{{- range .Tags}}{{if .Ops}}
<div><strong><a href="#tag-{{.Name}}">{{.Name}}</a></strong>
<ul>{{range .Ops}}<li><a href="#{{.ID}}"><span class="method {{lower .Method}}">{{.Method}}</span> <code>{{.Path}}</code></a></li>{{end}}</ul></div>
{{- end}}{{end}}
{{- if .Schemas}}
<div><strong><a href="#schemas">Schemas</a></strong>
<ul>{{range .Schemas}}<li><a href="#{{.ID}}"><code>{{.Name}}</code></a></li>{{end}}</ul></div>
{{- end}}
</nav>
{{range .Tags}}{{if .Ops}}
<section>
<h2 id="tag-{{.Name}}">{{.Name}}</h2>
{{.Description}}
{{range .Ops}}
<article class="op" id="{{.ID}}">
<div class="op-head"><span class="method {{lower .Method}}">{{.Method}}</span><span class="path">{{.Path}}</span><span class="summary">{{.Summary}}</span>{{if .Deprecated}}<span class="deprecated">deprecated</span>{{end}}</div>
{{.Description}}
{{- if .Params}}
<h4>Parameters</h4>
<table>
<tr><th>name</th><th>in</th><th>type</th><th>required</th><th>description</th></tr>
{{- range .Params}}
<tr><td><code>{{.Name}}</code></td><td>{{.In}}</td><td>{{.Type}}</td><td>{{if .Required}}<span class="req">required</span>{{else}}no{{end}}</td><td>{{.Description}}{{if .Example}}<div class="note">Example: <code>{{.Example}}</code></div>{{end}}</td></tr>
{{- end}}
</table>
{{- end}}
{{- with .Body}}
<h4>Request body{{if .Required}} <span class="req">required</span>{{end}}</h4>
{{.Description}}
{{- range .Content}}
<div class="mt"><code>{{.MediaType}}</code>{{if .Schema}}: {{.Schema}}{{end}}</div>
{{- range $i, $e := .Examples}}
<details{{if eq $i 0}} open{{end}}><summary>{{$e.Title}}</summary><pre>{{$e.Text}}</pre></details>
{{- end}}
{{- end}}
{{- end}}
<h4>Responses</h4>
<table>
<tr><th>code</th><th>description</th></tr>
{{- range .Responses}}
<tr><td><span class="code c{{slice .Code 0 1}}">{{.Code}}</span></td><td>{{.Description}}
{{- range .Headers}}<div class="mt">header <code>{{.Name}}</code>: {{.Type}} {{.Description}}</div>{{end}}
{{- range .Content}}
<div class="mt"><code>{{.MediaType}}</code>{{if .Schema}}: {{.Schema}}{{end}}</div>
{{- range $i, $e := .Examples}}
<details{{if eq $i 0}} open{{end}}><summary>{{$e.Title}}</summary><pre>{{$e.Text}}</pre></details>
{{- end}}
{{- end}}
</td></tr>
{{- end}}
</table>
</article>
{{end}}
</section>
{{end}}{{end}}
{{- if .Schemas}}
<section>
<h2 id="schemas">Schemas</h2>
{{- range .Schemas}}
<article class="op" id="{{.ID}}">
<h3 class="ref">{{.Name}}</h3>
{{.Description}}
{{- if .Type}}<div class="mt">{{.Type}}</div>{{end}}
{{- if .Props}}
<table>
<tr><th>field</th><th>type</th><th>required</th><th>description</th></tr>
{{- range .Props}}
<tr><td><code>{{.Name}}</code></td><td>{{.Type}}</td><td>{{if .Required}}<span class="req">required</span>{{else}}no{{end}}</td><td>{{.Description}}</td></tr>
{{- end}}
</table>
{{- end}}
{{- if .Example}}<details><summary>Example</summary><pre>{{.Example}}</pre></details>{{end}}
</article>
{{- end}}
</section>
{{- end}}
</main>
</body>
</html>
`))
