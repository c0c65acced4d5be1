package invoke_test

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"unicode"

	"github.com/connmgr/connmgr/invoke"
)

const (
	api     = "https://api.example.com/v2"
	apiDir  = "https://api.example.com/v2/"
	apiRoot = "https://api.example.com"
	apiKey  = "https://api.example.com/v2?apikey=k"
	apiV6   = "https://[2001:db8::1]:8443/api"
)

var bad = invoke.ErrInvalidRelativeURI

type resolveTest struct {
	name    string
	base    string
	target  invoke.Target
	want    string
	wantErr error
}

func rel(s string) invoke.Target { return invoke.Target{RelativeURI: s} }

func tmpl(s string, params ...string) invoke.Target {
	t := invoke.Target{RelativeURI: s, Template: true, PathParams: map[string]string{}}
	for i := 0; i+1 < len(params); i += 2 {
		t.PathParams[params[i]] = params[i+1]
	}
	return t
}

var resolveTests = []resolveTest{
	// Happy paths.
	{name: "segment", base: api, target: rel("orders"), want: api + "/orders"},
	{name: "leading slash optional", base: api, target: rel("/orders"), want: api + "/orders"},
	{name: "base with trailing slash", base: apiDir, target: rel("orders"), want: api + "/orders"},
	{name: "base dir, leading slash", base: apiDir, target: rel("/orders/7"), want: api + "/orders/7"},
	{name: "empty is base", base: api, target: rel(""), want: api},
	{name: "slash is base", base: api, target: rel("/"), want: api},
	{name: "empty keeps base slash", base: apiDir, target: rel(""), want: apiDir},
	{name: "trailing slash kept", base: api, target: rel("orders/"), want: api + "/orders/"},
	{name: "root base", base: apiRoot, target: rel("orders"), want: apiRoot + "/orders"},
	{name: "root base empty", base: apiRoot, target: rel(""), want: apiRoot},
	{name: "IPv6 base with port", base: apiV6, target: rel("/items?x=1"), want: apiV6 + "/items?x=1"},
	{name: "query only", base: api, target: rel("?page=2"), want: api + "?page=2"},
	{name: "base query merged", base: apiKey, target: rel("orders?page=2&page=3"), want: api + "/orders?apikey=k&page=2&page=3"},
	{name: "extra query sorted after", base: apiKey, target: invoke.Target{RelativeURI: "orders?b=1", Query: url.Values{"z": {"1"}, "a": {"2", "3"}}},
		want: api + "/orders?apikey=k&b=1&a=2&a=3&z=1"},
	{name: "query re-encoded", base: api, target: rel("s?q=a+b&q=c;d&r=%2F&flag"), want: api + "/s?q=a+b&q=c%3Bd&r=%2F&flag="},
	{name: "query backslash as data", base: api, target: rel("s?path=C:%5Cx"), want: api + "/s?path=C%3A%5Cx"},
	{name: "raw unsafe characters encoded", base: api, target: rel("a b/ü/\"x\""), want: api + "/a%20b/%C3%BC/%22x%22"},
	{name: "encoded slash kept", base: api, target: rel("projects/group%2Fproj"), want: api + "/projects/group%2Fproj"},
	{name: "encoded hash is data", base: api, target: rel("tags/%23x"), want: api + "/tags/%23x"},
	{name: "colon after leading slash", base: api, target: rel("/a:b"), want: api + "/a:b"},
	{name: "at sign is data", base: api, target: rel("user@evil.com/x"), want: api + "/user@evil.com/x"},
	{name: "dots inside names", base: api, target: rel(".well-known/a..b/.../x."), want: api + "/.well-known/a..b/.../x."},
	{name: "braces without template", base: api, target: rel("{id}"), want: api + "/%7Bid%7D"},
	{name: "template", base: api, target: tmpl("/orders/{orderId}/lines", "orderId", "A-17"), want: api + "/orders/A-17/lines"},
	{name: "placeholder in segment", base: api, target: tmpl("/orders/{id}.json", "id", "7"), want: api + "/orders/7.json"},
	{name: "placeholder twice", base: api, target: tmpl("{a}/{a}-{b}", "a", "x", "b", "y"), want: api + "/x/x-y"},
	{name: "param slash encoded", base: api, target: tmpl("f/{p}", "p", "a/b"), want: api + "/f/a%2Fb"},
	{name: "param query and fragment encoded", base: api, target: tmpl("f/{p}", "p", "a?b#c"), want: api + "/f/a%3Fb%23c"},
	{name: "param percent encoded", base: api, target: tmpl("f/{p}", "p", "100%"), want: api + "/f/100%25"},
	{name: "param with slashes is one segment", base: api, target: tmpl("/{f}", "f", "a/b"), want: api + "/a%2Fb"},
	{name: "param version with slash", base: api, target: tmpl("/{f}", "f", "v1.2/x"), want: api + "/v1.2%2Fx"},
	{name: "param dots around slash", base: api, target: tmpl("/{f}", "f", "a./.b/...."), want: api + "/a.%2F.b%2F...."},
	{name: "param trailing slash", base: api, target: tmpl("/{f}", "f", "a/"), want: api + "/a%2F"},
	{name: "param dots inside", base: api, target: tmpl("f/{p}", "p", "..."), want: api + "/f/..."},
	{name: "param space and semicolon", base: api, target: tmpl("f/{p}", "p", "a b;c"), want: api + "/f/a%20b%3Bc"},
	{name: "param beside dots", base: api, target: tmpl("f/{p}..", "p", "x"), want: api + "/f/x.."},
	{name: "exactly 8 KiB", base: api, target: rel(strings.Repeat("a", 8<<10)), want: api + "/" + strings.Repeat("a", 8<<10)},

	// Traversal in every encoding.
	{name: "dotdot", base: api, target: rel("../admin"), wantErr: bad},
	{name: "dotdot inside", base: api, target: rel("orders/../../admin"), wantErr: bad},
	{name: "dotdot last", base: api, target: rel("orders/.."), wantErr: bad},
	{name: "dot", base: api, target: rel("./x"), wantErr: bad},
	{name: "encoded slash after dotdot", base: api, target: rel("..%2fadmin"), wantErr: bad},
	{name: "encoded slash upper", base: api, target: rel("x/..%2Fadmin"), wantErr: bad},
	{name: "encoded dots", base: api, target: rel("%2e%2e/admin"), wantErr: bad},
	{name: "encoded dots and slash", base: api, target: rel("%2E%2E%2Fadmin"), wantErr: bad},
	{name: "double-encoded dots", base: api, target: rel("%252e%252e/admin"), wantErr: bad},
	{name: "triple-encoded", base: api, target: rel("x/%25252e%25252e%25252fadmin"), wantErr: bad},
	{name: "dot then encoded dot", base: api, target: rel(".%2e/admin"), wantErr: bad},
	{name: "encoded dot then dot", base: api, target: rel("%2e./admin"), wantErr: bad},
	{name: "encoded single dot", base: api, target: rel("orders/%2E"), wantErr: bad},
	{name: "dotdot backslash", base: api, target: rel(`..\admin`), wantErr: bad},
	{name: "dotdot encoded backslash", base: api, target: rel("..%5cadmin"), wantErr: bad},
	{name: "dotdot semicolon", base: api, target: rel("..;/admin"), wantErr: bad},
	{name: "dot semicolon", base: api, target: rel(".;/x"), wantErr: bad},
	{name: "encoded dotdot path parameter", base: api, target: rel("%2e%2e;jsessionid=1/admin"), wantErr: bad},
	{name: "fullwidth dots", base: api, target: rel("\uFF0E\uFF0E/admin"), wantErr: bad},
	{name: "encoded fullwidth dots", base: api, target: rel("%EF%BC%8E%EF%BC%8E/admin"), wantErr: bad},
	{name: "one dot leaders", base: api, target: rel("\u2024\u2024/admin"), wantErr: bad},
	{name: "two dot leader", base: api, target: rel("\u2025/admin"), wantErr: bad},
	{name: "small and ideographic dots", base: api, target: rel("\uFE52\u3002/admin"), wantErr: bad},
	{name: "fullwidth slash", base: api, target: rel("x\uFF0F\uFF0E\uFF0E"), wantErr: bad},
	{name: "fullwidth backslash", base: api, target: rel("..\uFF3Cadmin"), wantErr: bad},
	{name: "overlong UTF-8 dots", base: api, target: rel("%C0%AE%C0%AE/admin"), wantErr: bad},
	{name: "IIS unicode escape", base: api, target: rel("..%u2216admin"), wantErr: bad},
	{name: "encoded too many times", base: api, target: rel("a%" + strings.Repeat("25", 9) + "41"), wantErr: bad},

	// Other hosts.
	{name: "network path", base: api, target: rel("//evil.com"), wantErr: bad},
	{name: "three slashes", base: api, target: rel("///evil.com"), wantErr: bad},
	{name: "backslashes", base: api, target: rel(`\\evil.com`), wantErr: bad},
	{name: "slash backslash", base: api, target: rel(`/\evil.com`), wantErr: bad},
	{name: "encoded backslashes", base: api, target: rel("%5C%5Cevil.com"), wantErr: bad},
	{name: "absolute http", base: api, target: rel("http://evil.com"), wantErr: bad},
	{name: "absolute upper case", base: api, target: rel("HTTP://evil.com/x"), wantErr: bad},
	{name: "javascript", base: api, target: rel("javascript:alert(1)"), wantErr: bad},
	{name: "mailto", base: api, target: rel("mailto:a@b"), wantErr: bad},
	{name: "host and port reads as scheme", base: api, target: rel("evil.com:80/x"), wantErr: bad},
	{name: "userinfo absolute", base: api, target: rel("http://user:pass@evil.com/"), wantErr: bad},
	{name: "userinfo network path", base: api, target: rel("//user@evil.com/"), wantErr: bad},
	{name: "userinfo with password", base: api, target: rel("user:pass@evil.com/x"), wantErr: bad},
	{name: "host confusion", base: api, target: rel("https://api.example.com@evil.com/"), wantErr: bad},

	// Control characters and fragments.
	{name: "CRLF", base: api, target: rel("orders\r\nX-Evil: 1"), wantErr: bad},
	{name: "encoded CRLF", base: api, target: rel("orders%0d%0aX-Evil:%201"), wantErr: bad},
	{name: "double-encoded LF", base: api, target: rel("orders%250a"), wantErr: bad},
	{name: "NUL", base: api, target: rel("orders\x00"), wantErr: bad},
	{name: "encoded NUL", base: api, target: rel("orders%00.json"), wantErr: bad},
	{name: "tab", base: api, target: rel("or\tders"), wantErr: bad},
	{name: "encoded tab", base: api, target: rel("orders%09"), wantErr: bad},
	{name: "encoded DEL", base: api, target: rel("orders%7F"), wantErr: bad},
	{name: "encoded NEL", base: api, target: rel("orders%C2%85"), wantErr: bad},
	{name: "fragment", base: api, target: rel("orders#x"), wantErr: bad},
	{name: "fragment after query", base: api, target: rel("?a=b#c"), wantErr: bad},
	{name: "query CRLF", base: api, target: rel("x?a=%0d%0a"), wantErr: bad},
	{name: "query double-encoded LF", base: api, target: rel("x?a=%250a"), wantErr: bad},
	{name: "query key NUL", base: api, target: rel("x?%00=1"), wantErr: bad},
	{name: "extra query CR", base: api, target: invoke.Target{Query: url.Values{"q": {"a\rb"}}}, wantErr: bad},

	// Malformed input.
	{name: "too long", base: api, target: rel(strings.Repeat("a", 8<<10+1)), wantErr: bad},
	{name: "bad hex", base: api, target: rel("%zz"), wantErr: bad},
	{name: "lone percent", base: api, target: rel("orders%"), wantErr: bad},
	{name: "short escape", base: api, target: rel("orders%2"), wantErr: bad},
	{name: "query bad hex", base: api, target: rel("x?a=%zz"), wantErr: bad},
	{name: "empty segment", base: api, target: rel("a//b"), wantErr: bad},

	// Templates.
	{name: "unclosed placeholder", base: api, target: tmpl("/orders/{id", "id", "1"), wantErr: bad},
	{name: "unopened placeholder", base: api, target: tmpl("/orders/id}"), wantErr: bad},
	{name: "bad placeholder name", base: api, target: tmpl("/orders/{1id}", "1id", "1"), wantErr: bad},
	{name: "empty placeholder", base: api, target: tmpl("/orders/{}"), wantErr: bad},
	{name: "nested braces", base: api, target: tmpl("/orders/{a{b}}"), wantErr: bad},
	{name: "missing param", base: api, target: tmpl("/orders/{orderId}"), wantErr: invoke.ErrTemplate},
	{name: "empty param", base: api, target: tmpl("/orders/{orderId}", "orderId", ""), wantErr: invoke.ErrTemplate},
	{name: "extra param", base: api, target: tmpl("/orders/{id}", "id", "1", "x", "2"), wantErr: invoke.ErrTemplate},
	{name: "params without template", base: api, target: invoke.Target{RelativeURI: "/orders", PathParams: map[string]string{"id": "1"}}, wantErr: invoke.ErrTemplate},
	{name: "placeholder in query is not one", base: api, target: tmpl("/orders?id={id}", "id", "1"), wantErr: invoke.ErrTemplate},
	{name: "param dot", base: api, target: tmpl("f/{p}", "p", "."), wantErr: bad},
	{name: "param dotdot", base: api, target: tmpl("f/{p}/x", "p", ".."), wantErr: bad},
	{name: "param encoded dotdot", base: api, target: tmpl("f/{p}", "p", "%2e%2e"), wantErr: bad},
	{name: "param fullwidth dotdot", base: api, target: tmpl("f/{p}", "p", "\uFF0E\uFF0E"), wantErr: bad},
	{name: "param CRLF", base: api, target: tmpl("f/{p}", "p", "a\r\nb"), wantErr: bad},
	{name: "param backslash", base: api, target: tmpl("f/{p}", "p", `a\b`), wantErr: bad},
	{name: "params make dotdot", base: api, target: tmpl("f/{a}{b}", "a", ".", "b", "."), wantErr: bad},
	{name: "param and literal make dotdot", base: api, target: tmpl("f/.{a}", "a", "."), wantErr: bad},
	{name: "param percent and literal make dot", base: api, target: tmpl("f/{a}2e", "a", "%"), wantErr: bad},

	// Parameter values that climb out of the base path once a server
	// decodes %2F before normalising (#8.2).
	{name: "param climbs to admin", base: api, target: tmpl("/{f}", "f", "../admin/x"), wantErr: bad},
	{name: "param dot first", base: api, target: tmpl("/{f}", "f", "./x"), wantErr: bad},
	{name: "param dotdot inside", base: api, target: tmpl("/{f}", "f", "a/../b"), wantErr: bad},
	{name: "param dotdot last", base: api, target: tmpl("/{f}", "f", "a/.."), wantErr: bad},
	{name: "param dot inside", base: api, target: tmpl("/{f}", "f", "a/./b"), wantErr: bad},
	{name: "param dotdot alone", base: api, target: tmpl("/{f}", "f", ".."), wantErr: bad},
	{name: "param encoded dots and slash", base: api, target: tmpl("/{f}", "f", "%2e%2e/x"), wantErr: bad},
	{name: "param encoded slash", base: api, target: tmpl("/{f}", "f", "..%2Fx"), wantErr: bad},
	{name: "param double-encoded slash", base: api, target: tmpl("/{f}", "f", "..%252Fx"), wantErr: bad},
	{name: "param double-encoded dots", base: api, target: tmpl("/{f}", "f", "%252e%252e%252fx"), wantErr: bad},
	{name: "param backslash dotdot", base: api, target: tmpl("/{f}", "f", `..\x`), wantErr: bad},
	{name: "param encoded backslash dotdot", base: api, target: tmpl("/{f}", "f", "..%5Cx"), wantErr: bad},
	{name: "param backslash inside", base: api, target: tmpl("/{f}", "f", `a\..\b`), wantErr: bad},
	{name: "param fullwidth dots and slash", base: api, target: tmpl("/{f}", "f", "\uFF0E\uFF0E/x"), wantErr: bad},
	{name: "param fullwidth slash", base: api, target: tmpl("/{f}", "f", "a\uFF0F..\uFF0Fb"), wantErr: bad},
	{name: "param encoded fullwidth dots", base: api, target: tmpl("/{f}", "f", "%EF%BC%8E%EF%BC%8E/x"), wantErr: bad},
	{name: "param two dot leader", base: api, target: tmpl("/{f}", "f", "\u2025/x"), wantErr: bad},
	{name: "param dotdot semicolon", base: api, target: tmpl("/{f}", "f", "..;/x"), wantErr: bad},
	{name: "param dotdot semicolon inside", base: api, target: tmpl("/{f}", "f", "a/..;jsessionid=1/b"), wantErr: bad},
	{name: "param overlong dots", base: api, target: tmpl("/{f}", "f", "%C0%AE%C0%AE/x"), wantErr: bad},
	{name: "param climbs beside literal", base: api, target: tmpl("/files/{f}/raw", "f", "../../admin"), wantErr: bad},
	// A value that joins literal text in its segment: the assembled
	// segment, decoded and split at '/', holds no dot segment either.
	{name: "literal dotdot then param slash", base: api, target: tmpl("/..{f}", "f", "/admin"), wantErr: bad},
	{name: "literal encoded dotdot then param slash", base: api, target: tmpl("/%2e%2e{f}", "f", "/admin"), wantErr: bad},
	{name: "param slash then literal dotdot", base: api, target: tmpl("/{f}..", "f", "x/"), wantErr: bad},
	{name: "literal dot then param slash", base: api, target: tmpl("/.{f}", "f", "/admin"), wantErr: bad},
	{name: "params around literal dot", base: api, target: tmpl("/{a}.{b}", "a", "x/", "b", "/y"), wantErr: bad},
	{name: "params make double-encoded dotdot", base: api, target: tmpl("/{f}{g}", "f", "%", "g", "2e%2e/x"), wantErr: bad},
	{name: "param vertical two dot leader", base: api, target: tmpl("/{f}", "f", "\uFE30/x"), wantErr: bad},
	// A server that decodes before it splits off the query or fragment
	// reads "..%3F" as "..".
	{name: "dotdot encoded question mark", base: api, target: rel("x/..%3F/y"), wantErr: bad},
	{name: "dotdot encoded hash", base: api, target: rel("..%23"), wantErr: bad},
	{name: "param dotdot question mark", base: api, target: tmpl("/{f}", "f", "x/..?/y"), wantErr: bad},
	{name: "param dotdot hash", base: api, target: tmpl("/{f}", "f", "..#"), wantErr: bad},
	{name: "param with dots, question mark and hash as data", base: api, target: tmpl("/{f}", "f", "a.b?c#d..e"),
		want: api + "/a.b%3Fc%23d..e"},

	// Bounds of the merged query (#8.12).
	{name: "query of exactly 16 KiB", base: api, target: invoke.Target{Query: url.Values{"a": {strings.Repeat("b", 16<<10-2)}}},
		want: api + "?a=" + strings.Repeat("b", 16<<10-2)},
	{name: "query one byte over 16 KiB", base: api, target: invoke.Target{Query: url.Values{"a": {strings.Repeat("b", 16<<10-1)}}},
		wantErr: bad},
	{name: "many query parameters", base: api, target: invoke.Target{RelativeURI: "x", Query: manyParams(2000)}, wantErr: bad},
	{name: "encoding makes it long", base: api, target: invoke.Target{Query: url.Values{"q": {strings.Repeat("/", 6<<10)}}}, wantErr: bad},
	{name: "16 KiB, then one more parameter", base: apiKey,
		target: invoke.Target{Query: url.Values{"a": {strings.Repeat("b", 16<<10-11)}, "z": {"1"}}}, wantErr: bad},
	{name: "base, relative and extra query add up", base: apiKey,
		target: invoke.Target{RelativeURI: "x?" + strings.Repeat("r", 8<<10-3), Query: url.Values{"q": {strings.Repeat("q", 8<<10)}}}, wantErr: bad},
}

// manyParams returns n query parameters of 10 bytes each once encoded.
func manyParams(n int) url.Values {
	q := url.Values{}
	for i := range n {
		q.Set(fmt.Sprintf("k%04d", i), "vvv")
	}
	return q
}

func TestResolve(t *testing.T) {
	for _, tt := range resolveTests {
		t.Run(tt.name, func(t *testing.T) {
			base, err := url.Parse(tt.base)
			if err != nil {
				t.Fatal(err)
			}
			got, err := invoke.Resolve(base, tt.target)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Resolve(%q) = %v, %v, want %v", tt.target.RelativeURI, got, err, tt.wantErr)
				}
				if len(err.Error()) > 200 {
					t.Errorf("Resolve(%q) error is %d bytes long; it echoes the input", tt.target.RelativeURI, len(err.Error()))
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("Resolve(%q) = %v, %v, want %v", tt.target.RelativeURI, got, err, tt.want)
			}
			back, err := url.Parse(got.String())
			if err != nil || back.EscapedPath() != got.EscapedPath() {
				t.Errorf("Resolve(%q) = %v, which reads back with path %q", tt.target.RelativeURI, got, back.EscapedPath())
			}
		})
	}
}

func TestResolveReasons(t *testing.T) {
	base, _ := url.Parse(api)
	for _, tt := range []struct {
		target invoke.Target
		want   string
	}{
		{rel("%2e%2e/admin"), "invalid relative URI: contains a dot segment"},
		{rel("http://evil.com"), "invalid relative URI: is an absolute URL"},
		{rel("//evil.com"), "invalid relative URI: starts with // (a reference to another host)"},
		{tmpl("/orders/{orderId}"), "relative URI template and parameters do not match: placeholder {orderId} has no value"},
		{tmpl("/orders", "x", "1"), `relative URI template and parameters do not match: parameter "x" is not used in the template`},
		{tmpl("/orders", strings.Repeat("x", 1000), "1"), `relative URI template and parameters do not match: parameter "` + strings.Repeat("x", 40) + `..." is not used in the template`},
		{tmpl("f/{p}", "p", ".."), "invalid relative URI: value of {p} holds a dot segment"},
		{tmpl("f/{p}", "p", "../admin"), "invalid relative URI: value of {p} holds a dot segment"},
		{invoke.Target{Query: url.Values{"q": {strings.Repeat("b", 16<<10)}}}, "invalid relative URI: has a query longer than 16 KiB"},
	} {
		_, err := invoke.Resolve(base, tt.target)
		if err == nil || err.Error() != tt.want {
			t.Errorf("Resolve(%q) = %v, want %v", tt.target.RelativeURI, err, tt.want)
		}
	}
}

func TestResolveBase(t *testing.T) {
	for _, b := range []*url.URL{nil, {Path: "/v2"}, {Scheme: "https", Opaque: "x"}} {
		_, err := invoke.Resolve(b, rel("orders"))
		if err == nil || errors.Is(err, bad) || errors.Is(err, invoke.ErrTemplate) {
			t.Errorf("Resolve with base %v = %v, want a configuration error", b, err)
		}
	}
}

func ExampleResolve() {
	base, _ := url.Parse("https://api.example.com/v2?apikey=k")
	u, err := invoke.Resolve(base, invoke.Target{
		RelativeURI: "/orders/{orderId}/lines?expand=items",
		Template:    true,
		PathParams:  map[string]string{"orderId": "A/17"},
		Query:       url.Values{"expand": {"notes"}},
	})
	fmt.Println(u, err)

	_, err = invoke.Resolve(base, invoke.Target{RelativeURI: "..%2Fadmin"})
	fmt.Println(err)
	// Output:
	// https://api.example.com/v2/orders/A%2F17/lines?apikey=k&expand=items&expand=notes <nil>
	// invalid relative URI: contains a dot segment
}

// FuzzResolve checks, for any relative URI and parameter value, that
// Resolve never panics, fails only with its sentinels, and that every
// result stays on the base's host and under its path, also for a server
// that decodes %2F before normalising: a path parameter value, decoded
// and split at '/' or '\', holds no dot segment.
func FuzzResolve(f *testing.F) {
	var bases []string
	index := map[string]uint8{}
	for _, tt := range resolveTests {
		if _, ok := index[tt.base]; !ok {
			index[tt.base] = uint8(len(bases))
			bases = append(bases, tt.base)
		}
		var param string
		for _, v := range tt.target.PathParams {
			param = v
		}
		f.Add(index[tt.base], tt.target.RelativeURI, tt.target.Template, param)
		if param != "" {
			f.Add(index[tt.base], "/orders/{id}/lines", true, param)
		}
	}
	f.Fuzz(func(t *testing.T, bi uint8, relURI string, template bool, param string) {
		base, err := url.Parse(bases[int(bi)%len(bases)])
		if err != nil {
			t.Fatal(err)
		}
		target := invoke.Target{RelativeURI: relURI, Template: template, Query: url.Values{"q": {param}}}
		if template && strings.Contains(relURI, "{id}") {
			target.PathParams = map[string]string{"id": param}
		}
		got, err := invoke.Resolve(base, target)
		if err != nil {
			if !errors.Is(err, bad) && !errors.Is(err, invoke.ErrTemplate) {
				t.Fatalf("Resolve(%q) = %v, want an error wrapping a sentinel", relURI, err)
			}
			if len(err.Error()) > 200 {
				t.Fatalf("Resolve(%q) error is %d bytes long", relURI, len(err.Error()))
			}
			return
		}
		s := got.String()
		if got.Scheme != base.Scheme || got.Host != base.Host || got.User.String() != base.User.String() {
			t.Fatalf("Resolve(%q) = %v, want scheme and host of %v", relURI, s, base)
		}
		basePath, path := base.EscapedPath(), got.EscapedPath()
		if path != basePath && !strings.HasPrefix(path, strings.TrimSuffix(basePath, "/")+"/") {
			t.Fatalf("Resolve(%q) = %v, want a path under %q", relURI, s, basePath)
		}
		for seg := range strings.SplitSeq(path, "/") {
			// Also as a server reads it that decodes %2F (or %3F) first.
			if hasDotSegment(seg) {
				t.Fatalf("Resolve(%q) = %v, which has a dot segment", relURI, s)
			}
		}
		back, err := url.Parse(s)
		if err != nil || back.Host != base.Host || back.EscapedPath() != path {
			t.Fatalf("Resolve(%q) = %v, which reads back as %v, %v", relURI, s, back, err)
		}
		if strings.ContainsFunc(s, unicode.IsControl) || strings.Contains(s, `\`) {
			t.Fatalf("Resolve(%q) = %q, which has a control character or backslash", relURI, s)
		}
		if target.PathParams != nil && hasDotSegment(param) {
			t.Fatalf("Resolve(%q) with {id} = %q accepted a value that decodes to a dot segment: %v", relURI, param, s)
		}
	})
}

// hasDotSegment reports whether v, percent-decoded as often as it decodes
// and split at '/' and '\', holds a "." or ".." segment (a ";param" suffix
// ignored, as Tomcat ignores it, and a "?..." or "#..." one, which a server
// that decodes before it parses reads as the query or fragment).
func hasDotSegment(v string) bool {
	for range 20 {
		d, err := url.PathUnescape(v)
		if err != nil || d == v {
			break
		}
		v = d
	}
	for seg := range strings.FieldsFuncSeq(v, func(r rune) bool { return r == '/' || r == '\\' }) {
		if i := strings.IndexAny(seg, ";?#"); i >= 0 {
			seg = seg[:i]
		}
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}
