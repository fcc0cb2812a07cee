package queryapi

import (
	"bytes"
	"compress/gzip"
	_ "embed"
	"strings"
	"sync"

	"github.com/gofiber/fiber/v2"

	"github.com/clickagg/clickagg/console"
)

// openAPISpec is the API's OpenAPI 3.0 document, served at GET /openapi.json
// and shown by Swagger UI at GET /docs. Edit openapi.json when a route
// changes; TestEveryRouteDocumented fails until both agree.
//
//go:embed openapi.json
var openAPISpec []byte

// Swagger UI (swaggerui/README.md says which and how to update it) and our
// page for it.
var (
	//go:embed swaggerui/docs.html
	docsHTML []byte
	//go:embed swaggerui/docs.js
	docsJS []byte
	//go:embed swaggerui/swagger-ui-bundle.js
	swaggerUIBundle []byte
	//go:embed swaggerui/swagger-ui.css
	swaggerUICSS []byte
	//go:embed swaggerui/favicon-32x32.png
	swaggerUIFavicon []byte
	//go:embed swaggerui/LICENSE
	swaggerUILicense []byte
	//go:embed swaggerui/NOTICE
	swaggerUINotice []byte
	//go:embed swaggerui/swagger-ui-bundle.js.LICENSE.txt
	swaggerUIBundleLicenses []byte
)

// registerDocs adds GET /openapi.json (the embedded document), GET /docs
// (Swagger UI on it) and the page's files under /docs/.
func registerDocs(app *fiber.App) {
	app.Get("/openapi.json", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSONCharsetUTF8)
		return c.Send(openAPISpec)
	})
	app.Get("/docs", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
		c.Set(fiber.HeaderContentSecurityPolicy, console.CSP) // the dashboard's: Swagger UI needs nothing more
		c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
		c.Set(fiber.HeaderCacheControl, "no-cache")
		return c.Send(docsHTML)
	})
	for _, f := range []struct {
		name, ctype string
		body        []byte
	}{
		{"docs.js", fiber.MIMETextJavaScriptCharsetUTF8, docsJS},
		{"swagger-ui-bundle.js", fiber.MIMETextJavaScriptCharsetUTF8, swaggerUIBundle},
		{"swagger-ui.css", "text/css; charset=utf-8", swaggerUICSS},
		{"favicon-32x32.png", "image/png", swaggerUIFavicon},
		{"LICENSE", fiber.MIMETextPlainCharsetUTF8, swaggerUILicense},
		{"NOTICE", fiber.MIMETextPlainCharsetUTF8, swaggerUINotice},
		{"swagger-ui-bundle.js.LICENSE.txt", fiber.MIMETextPlainCharsetUTF8, swaggerUIBundleLicenses},
	} {
		app.Get("/docs/"+f.name, docsFile(f.ctype, f.body))
	}
}

// docsFile serves one embedded file, text gzipped to clients that take
// gzip (the bundle shrinks from 1.8 MB to under 0.5 MB). The gzipped copy
// is made once, on the first request that wants it.
func docsFile(ctype string, body []byte) fiber.Handler {
	text := !strings.HasPrefix(ctype, "image/")
	gz := sync.OnceValue(func() []byte { return gzipped(body) })
	return func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, ctype)
		c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
		// A day: the names do not change with Swagger UI's version.
		c.Set(fiber.HeaderCacheControl, "public, max-age=86400")
		c.Vary(fiber.HeaderAcceptEncoding)
		if text && c.Context().Request.Header.HasAcceptEncoding("gzip") {
			c.Set(fiber.HeaderContentEncoding, "gzip")
			return c.Send(gz())
		}
		return c.Send(body)
	}
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression) // a valid level: no error
	zw.Write(b)                                              // a bytes.Buffer takes everything
	zw.Close()
	return buf.Bytes()
}
