package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// collector posts the corpus to clickagg's collector, clients requests of
// size events in flight, each waiting for its answer; a 503 (overloaded) is
// tried again after 100 ms, any other failure ends the run.
func collector(lines [][]byte, c config) (result, error) {
	ep := endpoint{
		url:         strings.TrimSuffix(c.target, "/") + "/v1/events",
		contentType: "application/x-ndjson",
		retry:       func(status int) bool { return status == http.StatusServiceUnavailable },
		maxRetries:  math.MaxInt,
		accepted: func(answer []byte, _ request) int64 {
			var a struct{ Accepted int64 }
			json.Unmarshal(answer, &a)
			return a.Accepted
		},
	}
	r, err := post(split(lines, c.batch), c.clients, ep)
	if err != nil {
		return r, err
	}
	fmt.Printf("%s\t503 retries %d\taccepted %d\tpeak RSS %s\n",
		r.line("collector", fmt.Sprintf("%d clients × %d events/request", c.clients, c.batch)), r.retries, r.accepted, peakRSS(c.pid))
	return r, nil
}

// direct posts the rows to ClickHouse's HTTP interface as a client without
// clickagg would: the collector's pattern of requests, each failure tried
// again after 100 ms, at most maxRetries times. A retried INSERT may have
// been written already (in part: to the table but not to every view), so
// retries can count rows twice; the exactness check shows it.
func direct(rows [][]byte, c config) (result, error) {
	q := url.Values{"database": {c.db}, "query": {"INSERT INTO " + c.table + " FORMAT JSONEachRow"}}
	ep := endpoint{
		url:         strings.TrimSuffix(c.httpURL, "/") + "/?" + q.Encode(),
		contentType: "application/x-ndjson",
		retry:       func(int) bool { return true },
		maxRetries:  c.maxRetries,
		accepted:    func(_ []byte, r request) int64 { return int64(r.events) },
	}
	r, err := post(split(rows, c.batch), c.clients, ep)
	if err != nil {
		return r, err
	}
	fmt.Printf("%s\tretries %d\tgiven up %d\taccepted %d\n",
		r.line("http", fmt.Sprintf("%d clients × %d rows/request into %s", c.clients, c.batch, c.table)), r.retries, r.givenUp, r.accepted)
	for _, f := range r.failureLines() {
		fmt.Printf("\t%s\n", f)
	}
	return r, nil
}

// request is one POST body and the events in it.
type request struct {
	body   []byte
	events int
}

// split joins lines into requests of size lines each.
func split(lines [][]byte, size int) []request {
	var reqs []request
	for i := 0; i < len(lines); i += size {
		end := min(i+size, len(lines))
		reqs = append(reqs, request{bytes.Join(lines[i:end], []byte("\n")), end - i})
	}
	return reqs
}

// endpoint is where the requests go and how a client reads the answers.
type endpoint struct {
	url, contentType string
	retry            func(status int) bool // answers worth another try after 100 ms
	maxRetries       int                   // per request; then it is given up
	accepted         func(answer []byte, r request) int64
}

// post sends reqs from clients concurrent clients, each waiting for its
// answer, and times them all; the result counts the events of the requests
// answered 200. A transport error or an answer not worth
// retrying stops that client and fails the run.
func post(reqs []request, clients int, ep endpoint) (result, error) {
	queue := make(chan request, len(reqs))
	for _, r := range reqs {
		queue <- r
	}
	close(queue)
	p := &poster{
		endpoint: ep,
		hc:       &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: clients}},
		res:      result{acks: hdrhistogram.New(1, 60_000_000, 3), failures: map[string]int{}},
	}
	var wg sync.WaitGroup
	t := startTimer()
	for range clients {
		wg.Go(func() {
			for r := range queue {
				if err := p.deliver(r); err != nil {
					p.fail(err)
					return
				}
			}
		})
	}
	wg.Wait()
	t.stop(&p.res)
	return p.res, p.err
}

// poster is the clients' shared state.
type poster struct {
	endpoint
	hc  *http.Client
	mu  sync.Mutex
	res result
	err error // the first
}

// deliver sends r until it is answered 200, or until it is given up.
func (p *poster) deliver(r request) error {
	for attempt := 0; ; attempt++ {
		t0 := time.Now()
		status, answer, err := p.send(r.body)
		if err != nil {
			return err
		}
		if status == http.StatusOK {
			p.answered(time.Since(t0), r.events, p.accepted(answer, r))
			return nil
		}
		if !p.retry(status) {
			return fmt.Errorf("answer %d: %s", status, firstLine(answer))
		}
		if !p.failed(status, answer, attempt < p.maxRetries) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *poster) send(body []byte) (int, []byte, error) {
	resp, err := p.hc.Post(p.url, p.contentType, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("answer: %w", err)
	}
	return resp.StatusCode, answer, nil
}

func (p *poster) answered(latency time.Duration, events int, accepted int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.res.acks.RecordValue(latency.Microseconds())
	p.res.events += events
	p.res.accepted += accepted
}

// failed counts a failed answer and whether it is retried; it says whether
// to retry.
func (p *poster) failed(status int, answer []byte, retry bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.res.failures[strconv.Itoa(status)+" "+firstLine(answer)]++
	if retry {
		p.res.retries++
	} else {
		p.res.givenUp++
	}
	return retry
}

func (p *poster) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		p.err = err
	}
}

// firstLine is the start of an answer's first line, enough to tell errors
// apart.
func firstLine(answer []byte) string {
	l, _, _ := strings.Cut(string(answer), "\n")
	if len(l) > 300 {
		l = l[:300] + "…"
	}
	return l
}

// peakRSS is the VmHWM of pid, or "-".
func peakRSS(pid int) string {
	if pid == 0 {
		return "-"
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return "-"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			return strings.Join(strings.Fields(l)[1:], " ")
		}
	}
	return "-"
}
