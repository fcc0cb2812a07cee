package ingestor

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/ClickHouse/ch-go/compress"
	"github.com/ClickHouse/ch-go/proto"
)

// Transport sends one Native-encoded block to ClickHouse with an INSERT
// query. The ctx deadline bounds the whole attempt.
type Transport interface {
	Insert(ctx context.Context, query string, block []byte) error
}

// HTTPOptions configures HTTP. The zero value talks to a local server's
// default database with LZ4 compression.
type HTTPOptions struct {
	URL      string // ClickHouse HTTP interface; default http://127.0.0.1:8123
	Database string // default "default"
	User     string // sent with basic auth when set
	Password string
	// NoCompression sends blocks as they are instead of in ClickHouse's LZ4
	// framing (decompress=1), trading bandwidth for CPU.
	NoCompression bool
	TLS           *tls.Config  // for an https:// URL; nil: the system's roots
	Client        *http.Client // default: a client with keep-alive and no overall timeout (deadlines come from ctx)
}

// HTTP posts `INSERT ... FORMAT Native` blocks to ClickHouse's HTTP
// interface. This is the transport that works on ClickHouse 18.16 (whose
// native protocol revision ch-go cannot speak) as well as on modern servers.
type HTTP struct {
	endpoint string // URL with database and settings, without the query
	o        HTTPOptions
	framers  sync.Pool // *framer
}

// framer is an LZ4 writer and the buffer an insert's frames are gathered
// in, reused from insert to insert.
type framer struct {
	w   *compress.Writer
	buf []byte
}

// frameSize is the uncompressed size of one LZ4 frame, as ClickHouse's own
// max_compress_block_size, so the server decompresses in small steps.
const frameSize = 1 << 20

// NewHTTP returns an HTTP transport.
func NewHTTP(o HTTPOptions) (*HTTP, error) {
	if o.URL == "" {
		o.URL = "http://127.0.0.1:8123"
	}
	if o.Database == "" {
		o.Database = "default"
	}
	if o.Client == nil {
		o.Client = &http.Client{Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     2 * time.Second, // below ClickHouse's keep_alive_timeout (3 s), so idle conns are not reused after the server dropped them
			TLSClientConfig:     o.TLS,
		}}
	}
	u, err := url.Parse(o.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("clickhouse url %q: invalid", o.URL)
	}
	q := u.Query()
	q.Set("database", o.Database)
	if !o.NoCompression {
		q.Set("decompress", "1")
	}
	u.RawQuery = q.Encode()
	h := &HTTP{endpoint: u.String(), o: o}
	h.framers.New = func() any { return &framer{w: compress.NewWriter(compress.LevelZero, compress.LZ4)} }
	return h, nil
}

// Insert implements Transport.
func (h *HTTP) Insert(ctx context.Context, query string, block []byte) error {
	body := block
	if !h.o.NoCompression {
		f := h.framers.Get().(*framer)
		defer h.framers.Put(f)
		f.buf = f.buf[:0]
		for len(block) > 0 {
			n := min(len(block), frameSize)
			if err := f.w.Compress(block[:n]); err != nil {
				return fmt.Errorf("compress block: %w", err)
			}
			f.buf = append(f.buf, f.w.Data...)
			block = block[n:]
		}
		body = f.buf
	}
	// The body's bytes are reused once Insert returns (the frames by the
	// next insert, the block by the ingestor), and the Transport may still
	// be writing them when an answer came early: end its reads first.
	g := new(bodyGuard)
	defer g.end()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.endpoint+"&query="+url.QueryEscape(query), g.reader(body))
	if err != nil {
		return fmt.Errorf("insert request: %w", err)
	}
	req.ContentLength = int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) { return g.reader(body), nil }
	if h.o.User != "" {
		req.SetBasicAuth(h.o.User, h.o.Password)
	}
	resp, err := h.o.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL holds the whole query; the cause is enough
		}
		return &NetError{Err: err}
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	return newServerError(resp, msg)
}

// bodyGuard ends the reads of a request body whose bytes its caller is
// about to reuse: a Read after end fails instead of reading them.
type bodyGuard struct {
	mu    sync.Mutex
	ended bool
}

var errBodyReused = errors.New("request body read after the insert returned")

func (g *bodyGuard) end() {
	g.mu.Lock()
	g.ended = true
	g.mu.Unlock()
}

// reader reads b until end.
func (g *bodyGuard) reader(b []byte) io.ReadCloser { return &guardedReader{g: g, b: b} }

type guardedReader struct {
	g *bodyGuard
	b []byte
}

func (r *guardedReader) Read(p []byte) (int, error) {
	r.g.mu.Lock()
	defer r.g.mu.Unlock()
	if r.g.ended {
		return 0, errBodyReused
	}
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

func (r *guardedReader) Close() error { return nil }

// ServerError is an error answer of ClickHouse.
type ServerError struct {
	Status  int         // HTTP status
	Code    proto.Error // ClickHouse error code, 0 when unknown
	Message string      // the server's text, trimmed
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("clickhouse: %v (http %d): %s", e.Code, e.Status, e.Message)
}

func newServerError(resp *http.Response, msg []byte) *ServerError {
	e := &ServerError{Status: resp.StatusCode, Message: string(bytes.TrimSpace(msg))}
	// Modern servers send the code as a header; 18.16 only in the text.
	if c, err := strconv.Atoi(resp.Header.Get("X-ClickHouse-Exception-Code")); err == nil {
		e.Code = proto.Error(c)
	} else if i := bytes.Index(msg, []byte("Code: ")); i >= 0 {
		rest := msg[i+len("Code: "):]
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		c, _ := strconv.Atoi(string(rest[:j]))
		e.Code = proto.Error(c)
	}
	return e
}

// NetError is a failure to reach ClickHouse or to read its answer.
type NetError struct{ Err error }

func (e *NetError) Error() string { return "clickhouse unreachable: " + e.Err.Error() }
func (e *NetError) Unwrap() error { return e.Err }

// retryableCodes are ClickHouse errors that a later attempt may not meet:
// overload, timeouts, network trouble, read-only replicas.
var retryableCodes = map[proto.Error]bool{
	proto.ErrUnexpectedEndOfFile:        true, // a body cut short on the way
	proto.ErrTimeoutExceeded:            true,
	proto.ErrTooManySimultaneousQueries: true,
	proto.ErrNoFreeConnection:           true,
	proto.ErrSocketTimeout:              true,
	proto.ErrNetworkError:               true,
	proto.ErrMemoryLimitExceeded:        true,
	proto.ErrTableIsReadOnly:            true, // a replica without ZooKeeper
	proto.ErrNoZookeeper:                true, // its session expired; a new one comes
	proto.ErrTooManyParts:               true,
	proto.ErrUnknownStatusOfInsert:      true,
	proto.ErrQueryWasCancelled:          true,
	proto.ErrSystemError:                true,
	proto.ErrKeeperException:            true,
}

// Temporary reports whether err may go away by itself: the server was
// unreachable or overloaded. Other errors (bad schema, bad data) will not.
func Temporary(err error) bool {
	var ne *NetError
	if errors.As(err, &ne) || errors.Is(err, ErrBufferFull) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var se *ServerError
	if errors.As(err, &se) {
		return retryableCodes[se.Code] || se.Status == http.StatusBadGateway ||
			se.Status == http.StatusServiceUnavailable || se.Status == http.StatusGatewayTimeout
	}
	return false
}
