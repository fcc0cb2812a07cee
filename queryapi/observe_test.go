package queryapi

import (
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

type seen struct {
	mu     sync.Mutex
	labels [][2]string
}

func (s *seen) OnRequest(route, method string, status int, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.labels = append(s.labels, [2]string{route, method})
}

// The labels an observer keeps stay as they were observed (Fiber's method
// string points into a reused buffer), and only route patterns are labels.
func TestObserverLabels(t *testing.T) {
	var s seen
	app := New(Options{Observer: &s, IngestStatus: func() any { return nil }, Auth: AuthOptions{QueryTokens: []string{"q"}}})
	for _, r := range []struct{ method, path string }{
		{"GET", "/healthz"}, {"POST", "/healthz"}, {"GET", "/no/such/path/123"}, {"GET", "/v1/ingest/status"}, {"DELETE", "/healthz"},
	} {
		resp, err := app.Test(httptest.NewRequest(r.method, r.path, nil))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	want := [][2]string{{"/healthz", "GET"}, {"middleware", "POST"}, {"middleware", "GET"}, {"middleware", "GET"}, {"middleware", "DELETE"}}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.labels) != len(want) {
		t.Fatalf("observed %v", s.labels)
	}
	for i := range want {
		if s.labels[i] != want[i] {
			t.Errorf("request %d observed as %v, want %v", i, s.labels[i], want[i])
		}
	}
}
