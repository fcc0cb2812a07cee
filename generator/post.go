package generator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Retry policy for 503 and 429 answers.
const (
	maxRetries        = 10
	defaultRetryAfter = time.Second
	maxRetryAfter     = 30 * time.Second
	maxReplyBytes     = 1 << 20
)

// batch is one request body, reused across requests.
type batch struct {
	raw    []byte // NDJSON
	zipped []byte // raw gzipped, when asked for
	body   []byte // what is posted: raw or zipped
	events int
}

// poster sends batches to the collector and records the outcome in st.
type poster struct {
	client *http.Client
	url    string
	gzip   bool
	token  string
	st     *stats
}

// reply is the collector's answer to a 200.
type reply struct {
	Accepted   int64  `json:"accepted"`
	Rejected   int64  `json:"rejected"`
	Duplicates *int64 `json:"duplicates"`
}

// send posts b until the collector takes it, refuses it, or the retries run
// out. Requests run under ctx; waits between retries also end with stop, so
// a finished run does not sit out a long Retry-After.
func (p *poster) send(ctx, stop context.Context, b *batch) {
	p.st.sent.Add(int64(b.events))
	for attempt := 0; ; attempt++ {
		began := time.Now()
		status, header, body, err := p.post(ctx, b.body)
		if err != nil {
			p.st.fail(b.events, err)
			return
		}
		switch {
		case status >= 200 && status < 300:
			p.st.ack(time.Since(began))
			p.count(b.events, body)
			return
		case status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests:
			p.st.retries.Add(1)
			p.st.errors.Add(1)
			if attempt == maxRetries {
				p.st.fail(b.events, fmt.Errorf("status %d after %d retries", status, maxRetries))
				return
			}
			if err := sleep(stop, retryAfter(header.Get("Retry-After"))); err != nil {
				p.st.fail(b.events, fmt.Errorf("retry wait: %w", err))
				return
			}
		default:
			p.st.fail(b.events, fmt.Errorf("status %d: %s", status, snippet(body)))
			return
		}
	}
}

func (p *poster) post(ctx context.Context, body []byte) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	if p.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	res, err := p.client.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("post: %w", err)
	}
	defer res.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(res.Body, maxReplyBytes))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("reply: %w", err)
	}
	return res.StatusCode, res.Header, reply, nil
}

// count adds a 2xx answer to the totals. A body that does not parse still
// means the collector took the batch, so all its events count as accepted.
func (p *poster) count(events int, body []byte) {
	var r reply
	if err := json.Unmarshal(body, &r); err != nil {
		r = reply{Accepted: int64(events)}
	}
	p.st.accepted.Add(r.Accepted)
	p.st.rejected.Add(r.Rejected)
	if r.Duplicates != nil {
		p.st.duplicates.Add(*r.Duplicates)
		p.st.sawDuplicates.Store(true)
	}
}

// retryAfter reads a Retry-After header in seconds or as an HTTP date.
func retryAfter(v string) time.Duration {
	d := defaultRetryAfter
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = time.Until(t)
	}
	return min(max(d, 0), maxRetryAfter)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func snippet(body []byte) string {
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	if s == "" {
		return "empty reply"
	}
	return s
}
