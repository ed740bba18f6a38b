package protocol

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestTokenRefreshWireAndRedaction(t *testing.T) {
	const tok = "eyJhbGciOiJIUzI1NiJ9.eyJub2RlSWQiOiJuIn0.secret-signature"
	b, err := json.Marshal(TokenRefresh{Token: tok, ExpiresAt: "2030-01-01T00:00:00Z"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"type":"token_refresh","token":"` + tok + `","expiresAt":"2030-01-01T00:00:00Z"}`; string(b) != want {
		t.Errorf("wire = %s, want %s", b, want)
	}
	m, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	tr, ok := m.(TokenRefresh)
	if !ok || tr.Token != tok || tr.ExpiresAt != "2030-01-01T00:00:00Z" {
		t.Fatalf("Decode = %#v", m)
	}
	for _, s := range []string{fmt.Sprint(tr), fmt.Sprintf("%v %+v %#v %s", tr, tr, tr, tr)} {
		if strings.Contains(s, tok) || strings.Contains(s, "secret-signature") {
			t.Errorf("formatted message shows the token: %s", s)
		}
	}
	if _, err := Decode([]byte(`{"type":"token_refresh","token":42}`)); err == nil {
		t.Errorf("a numeric token decoded")
	}
}
