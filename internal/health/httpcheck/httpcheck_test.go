package httpcheck

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestGet(t *testing.T) {
	healthy := true
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		if !healthy {
			http.Error(w, "not ok: database locked", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	plain := httptest.NewServer(handler)
	defer plain.Close()
	secure := httptest.NewTLSServer(handler) // a certificate the probe cannot verify
	defer secure.Close()

	for _, srv := range []*httptest.Server{plain, secure} {
		healthy = true
		if err := Get(context.Background(), srv.URL+"/healthz"); err != nil {
			t.Errorf("Get(%s) of a healthy endpoint = %v", srv.URL, err)
		}
		healthy = false
		err := Get(context.Background(), srv.URL+"/healthz")
		var se *StatusError
		if !errors.As(err, &se) || se.Status != "503 Service Unavailable" || se.Body != "not ok: database locked\n" {
			t.Fatalf("Get(%s) of an unhealthy endpoint = %#v, want a StatusError with status and body", srv.URL, err)
		}
		if want := srv.URL + "/healthz answered 503 Service Unavailable: not ok: database locked\n"; err.Error() != want {
			t.Errorf("error %q, want %q", err, want)
		}
	}
}

func TestGetWithoutAnAnswer(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL + "/healthz"
	srv.Close()
	err := Get(context.Background(), url)
	var se *StatusError
	if err == nil || errors.As(err, &se) || !strings.Contains(err.Error(), url) {
		t.Errorf("Get of a closed port = %v, want the client's error naming the URL", err)
	}

	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-hang }))
	defer slow.Close()
	defer close(hang)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := Get(ctx, slow.URL); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Get of an endpoint that does not answer = %v, want the deadline", err)
	}
}
