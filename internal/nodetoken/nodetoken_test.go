package nodetoken

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

// jwtOf builds an unsigned-looking JWT around a claims payload: the
// signature is never checked here.
func jwtOf(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc([]byte(claims)) + ".c2ln"
}

func TestNodeID(t *testing.T) {
	for _, c := range []struct {
		name, token, want string
	}{
		{"nodeId wins", jwtOf(`{"nodeId":"n-1","sub":"s-1","id":"i-1"}`), "n-1"},
		{"sub next", jwtOf(`{"sub":"s-1","id":"i-1"}`), "s-1"},
		{"id last", jwtOf(`{"id":"i-1"}`), "i-1"},
		{"numeric nodeId", jwtOf(`{"nodeId":42,"sub":"s-1"}`), "42"},
		{"numeric as float", jwtOf(`{"nodeId":42.0}`), "42"},
		{"numeric with exponent", jwtOf(`{"nodeId":4.2e1}`), "42"},
		{"large integer stays exact", jwtOf(`{"nodeId":9007199254740993}`), "9007199254740993"},
		{"fraction", jwtOf(`{"nodeId":1.5}`), "1.5"},
		{"negative", jwtOf(`{"nodeId":-7}`), "-7"},
		{"empty nodeId falls through", jwtOf(`{"nodeId":"","sub":"s-1"}`), "s-1"},
		{"object claim ignored", jwtOf(`{"nodeId":{"x":1},"sub":"s-1"}`), "s-1"},
		{"no id claims", jwtOf(`{"name":"x"}`), ""},
		{"not a JWT", "opaque-token-value", ""},
		{"garbage segments", "a.b.c", ""},
		{"payload not an object", jwtOf(`[1,2]`), ""},
		{"padded payload", strings.Replace(jwtOf(`{"sub":"s"}`), ".c2ln", "", 1) + "==.c2ln", "s"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := NodeID(c.token); got != c.want {
				t.Errorf("NodeID = %q, want %q", got, c.want)
			}
		})
	}
}

func TestIdentityFallbacks(t *testing.T) {
	if got := Identity(jwtOf(`{"nodeId":7}`), "env-id", "name"); got != "7" {
		t.Errorf("claim first: %q", got)
	}
	if got := Identity("opaque", "env-id", "name"); got != "env-id" {
		t.Errorf("then NODE_ID: %q", got)
	}
	if got := Identity("opaque", "", "name"); got != "name" {
		t.Errorf("then NODE_NAME: %q", got)
	}
	// Never a slice of the token.
	if got := Identity("abcdefghijklmnop", "", ""); got != "" {
		t.Errorf("opaque token without fallbacks: %q", got)
	}
}

func TestTimesAndExpiry(t *testing.T) {
	c, ok := Parse(jwtOf(`{"sub":"n","iat":1700000000,"exp":1700000060.5}`))
	if !ok || !c.IssuedAt.Equal(time.Unix(1700000000, 0)) || !c.ExpiresAt.Equal(time.Unix(1700000060, 5e8)) {
		t.Fatalf("Parse = %+v, %v", c, ok)
	}
	if c.Expired(time.Unix(1700000060, 0)) || !c.Expired(time.Unix(1700000061, 0)) {
		t.Errorf("Expired around exp is wrong")
	}
	if Expired(jwtOf(`{"sub":"n"}`), time.Now()) || Expired("opaque", time.Now()) {
		t.Errorf("a token without exp counts as expired")
	}
	if c, _ := Parse(jwtOf(`{"exp":"tomorrow"}`)); !c.ExpiresAt.IsZero() {
		t.Errorf("a non-numeric exp was read as %v", c.ExpiresAt)
	}
}

func TestPrefer(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tok := func(node string, iat, exp int64) string {
		return jwtOf(`{"nodeId":"` + node + `","iat":` + itoa(iat) + `,"exp":` + itoa(exp) + `}`)
	}
	configured := tok("n", 1_799_999_000, 1_800_000_100)
	for _, c := range []struct {
		name, newer string
		want        bool // newer chosen
	}{
		{"later, same node, valid", tok("n", 1_799_999_500, 1_800_000_500), true},
		{"none", "", false},
		{"other node", tok("m", 1_799_999_500, 1_800_000_500), false},
		{"issued earlier (an operator's rotated token is newer)", tok("n", 1_799_998_000, 1_800_000_500), false},
		{"issued the same second", tok("n", 1_799_999_000, 1_800_000_500), false},
		{"expired", tok("n", 1_799_999_500, 1_799_999_900), false},
		{"not a JWT", "opaque", false},
		// Review M4: a forged token must not win every later comparison.
		{"issued in the year 30000", tok("n", 884_541_340_800, 884_541_344_400), false},
		{"issued 10 minutes ahead", tok("n", 1_800_000_600, 1_800_004_200), false},
		{"issued 4 minutes ahead (clock skew)", tok("n", 1_800_000_240, 1_800_003_840), true},
		{"no node", jwtOf(`{"iat":1799999500,"exp":1800000500}`), false},
		{"no exp", jwtOf(`{"nodeId":"n","iat":1799999500}`), false},
		{"lifetime of 401 days", tok("n", 1_799_999_500, 1_799_999_500+401*86400), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Prefer(configured, c.newer, now)
			if (got == c.newer && c.newer != "") != c.want {
				t.Errorf("Prefer chose the newer token: %v, want %v", got == c.newer, c.want)
			}
		})
	}
	if got := Prefer("opaque-configured", tok("n", 1, 1_900_000_000), now); got != "opaque-configured" {
		t.Errorf("an opaque configured token was replaced")
	}
}

// Review M4: what a token handed over in token_refresh must be, by the
// agent's clock (the agent cannot check the signature).
func TestCheckRefreshed(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, c := range []struct {
		name, claims, node string
		want               string // "" accepted, else part of the error
	}{
		{"fresh", `{"nodeId":"n","iat":1800000000,"exp":1800003600}`, "n", ""},
		{"expired is not checked here", `{"nodeId":"n","iat":1799990000,"exp":1799993600}`, "n", ""},
		{"400 days", `{"nodeId":"n","iat":1800000000,"exp":1834560000}`, "n", ""},
		{"no node", `{"iat":1800000000,"exp":1800003600}`, "n", "names no node"},
		{"agent without id", `{"nodeId":"n","iat":1800000000,"exp":1800003600}`, "", "not known"},
		{"other node", `{"nodeId":"m","iat":1800000000,"exp":1800003600}`, "n", "another node"},
		{"no iat", `{"nodeId":"n","exp":1800003600}`, "n", "no issue time"},
		{"year 30000", `{"nodeId":"n","iat":884541340800,"exp":884541344400}`, "n", "ahead of this host's clock"},
		{"6 minutes ahead", `{"nodeId":"n","iat":1800000360,"exp":1800003600}`, "n", "ahead of this host's clock"},
		{"no exp", `{"nodeId":"n","iat":1800000000}`, "n", "does not expire"},
		{"exp before iat", `{"nodeId":"n","iat":1800000000,"exp":1799999999}`, "n", "before it was issued"},
		{"401 days", `{"nodeId":"n","iat":1800000000,"exp":1834646400}`, "n", "longer than 400 days"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl, ok := Parse(jwtOf(c.claims))
			if !ok {
				t.Fatal("not parsed")
			}
			err := cl.CheckRefreshed(c.node, now)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("error %v, want %q", err, c.want)
			}
		})
	}
}

func itoa(n int64) string {
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

func FuzzParse(f *testing.F) {
	f.Add(jwtOf(`{"nodeId":42,"iat":1,"exp":2}`))
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, token string) {
		c, ok := Parse(token)
		if !ok && (c.NodeID != "" || !c.IssuedAt.IsZero()) {
			t.Errorf("failed parse returned claims %+v", c)
		}
		_ = Identity(token, "", "fallback")
	})
}
