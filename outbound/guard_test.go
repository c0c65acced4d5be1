package outbound_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connmgr/connmgr/outbound"
	"github.com/connmgr/connmgr/outbound/outboundtest"
)

func TestCheck(t *testing.T) {
	for _, tt := range []struct {
		name  string
		allow string
		addr  string
		want  string // the reason, or "" for allowed
	}{
		{name: "public IPv4", addr: "93.184.216.34"},
		{name: "public DNS", addr: "8.8.8.8"},
		{name: "public IPv6", addr: "2606:4700:4700::1111"},
		{name: "this network", addr: "0.0.0.0", want: "unspecified address"},
		{name: "this network range", addr: "0.1.2.3", want: "unspecified address"},
		{name: "IPv6 unspecified", addr: "::", want: "unspecified address"},
		{name: "loopback", addr: "127.0.0.1", want: "loopback address"},
		{name: "loopback range", addr: "127.255.255.254", want: "loopback address"},
		{name: "IPv6 loopback", addr: "::1", want: "loopback address"},
		{name: "private 10", addr: "10.0.0.1", want: "private address"},
		{name: "private 172.16", addr: "172.16.0.1", want: "private address"},
		{name: "private 172.31", addr: "172.31.255.255", want: "private address"},
		{name: "public 172.32", addr: "172.32.0.1"},
		{name: "private 192.168", addr: "192.168.1.1", want: "private address"},
		{name: "cloud metadata", addr: "169.254.169.254", want: "link-local address (cloud metadata)"},
		{name: "IPv6 link-local", addr: "fe80::1", want: "link-local address"},
		{name: "IPv6 link-local with zone", addr: "fe80::1%eth0", want: "link-local address"},
		{name: "CGNAT", addr: "100.64.0.1", want: "carrier-grade NAT address"},
		{name: "CGNAT end", addr: "100.127.255.255", want: "carrier-grade NAT address"},
		{name: "after CGNAT", addr: "100.128.0.1"},
		{name: "unique-local", addr: "fc00::1", want: "unique-local IPv6 address"},
		{name: "AWS IPv6 metadata", addr: "fd00:ec2::254", want: "unique-local IPv6 address"},
		{name: "site-local", addr: "fec0::1", want: "site-local IPv6 address"},
		{name: "multicast", addr: "224.0.0.1", want: "multicast address"},
		{name: "IPv6 multicast", addr: "ff02::1", want: "multicast address"},
		{name: "reserved", addr: "240.0.0.1", want: "reserved address"},
		{name: "broadcast", addr: "255.255.255.255", want: "broadcast address"},
		{name: "IETF assignments", addr: "192.0.0.192", want: "IETF protocol assignment address"},
		{name: "benchmarking", addr: "198.19.255.255", want: "benchmarking address"},
		{name: "mapped loopback", addr: "::ffff:127.0.0.1", want: "loopback address"},
		{name: "mapped metadata", addr: "::ffff:169.254.169.254", want: "link-local address (cloud metadata)"},
		{name: "mapped public", addr: "::ffff:8.8.8.8"},
		{name: "IPv4-compatible", addr: "::127.0.0.1", want: "IPv4-embedded IPv6 address"},
		{name: "IPv4-translated", addr: "::ffff:0:7f00:1", want: "IPv4-embedded IPv6 address"},
		{name: "NAT64", addr: "64:ff9b::a9fe:a9fe", want: "IPv4-embedded IPv6 address"},
		{name: "NAT64 public", addr: "64:ff9b::808:808", want: "IPv4-embedded IPv6 address"},
		{name: "local NAT64", addr: "64:ff9b:1::1", want: "IPv4-embedded IPv6 address"},
		{name: "6to4", addr: "2002:7f00:1::1", want: "IPv4-embedded IPv6 address"},
		{name: "Teredo", addr: "2001:0:4136:e378::1", want: "IPv4-embedded IPv6 address"},
		{name: "invalid", addr: "", want: "invalid address"},
		{name: "allowed loopback", allow: "127.0.0.0/8", addr: "127.0.0.1"},
		{name: "allowed loopback, mapped", allow: "127.0.0.0/8", addr: "::ffff:127.0.0.1"},
		{name: "allowed loopback, private still denied", allow: "127.0.0.0/8", addr: "10.0.0.1", want: "private address"},
		{name: "allowed IPv4 loopback, IPv6 still denied", allow: "127.0.0.0/8", addr: "::1", want: "loopback address"},
		{name: "allowed mapped entry", allow: "::ffff:10.0.0.0/104", addr: "10.1.2.3"},
		{name: "allowed single IP", allow: "169.254.169.254", addr: "169.254.169.254"},
		{name: "allowed single IP only", allow: "169.254.169.254", addr: "169.254.169.253", want: "link-local address (cloud metadata)"},
		{name: "allowed unique-local", allow: "fd00::/8", addr: "fd00::1"},
		{name: "allowed link-local with zone", allow: "fe80::/10", addr: "fe80::1%eth0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			allow, err := outbound.ParseAllow(tt.allow)
			if err != nil {
				t.Fatal(err)
			}
			var addr netip.Addr
			if tt.addr != "" {
				addr = netip.MustParseAddr(tt.addr)
			}
			err = (&outbound.Guard{Allow: allow}).Check(addr)
			var de *outbound.DeniedError
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Check(%v) = %v, want nil", addr, err)
			case tt.want == "":
			case !errors.As(err, &de) || de.Reason != tt.want || de.Addr != addr || de.Host != "":
				t.Errorf("Check(%v) = %v, want %v", addr, err, tt.want)
			case !errors.Is(err, outbound.ErrEgressDenied) || !strings.Contains(err.Error(), "CONNMGR_EGRESS_ALLOW"):
				t.Errorf("Check(%v) = %v, want ErrEgressDenied naming CONNMGR_EGRESS_ALLOW", addr, err)
			}
		})
	}
}

func TestParseAllow(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   string
		want []string
	}{
		{name: "empty", in: ""},
		{name: "blank", in: " , "},
		{name: "CIDR", in: "127.0.0.0/8", want: []string{"127.0.0.0/8"}},
		{name: "list with spaces", in: " 127.0.0.0/8 , ::1 ,10.0.0.0 / 8,", want: []string{"127.0.0.0/8", "::1/128", "10.0.0.0/8"}},
		{name: "single IPv4", in: "169.254.169.254", want: []string{"169.254.169.254/32"}},
		{name: "host bits masked", in: "10.1.2.3/8", want: []string{"10.0.0.0/8"}},
		{name: "mapped unmapped", in: "::ffff:10.0.0.0/104,::ffff:127.0.0.1", want: []string{"10.0.0.0/8", "127.0.0.1/32"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := outbound.ParseAllow(tt.in)
			var gotS []string
			for _, p := range got {
				gotS = append(gotS, p.String())
			}
			if err != nil || !slices.Equal(gotS, tt.want) {
				t.Errorf("ParseAllow(%q) = %v, %v, want %v", tt.in, gotS, err, tt.want)
			}
		})
	}
	for _, in := range []string{"localhost", "10.0.0.0/33", "1.2.3", "127.0.0.1,evil", "fe80::1%eth0", "10.0.0.0/", "*"} {
		t.Run("bad "+in, func(t *testing.T) {
			bad := in[strings.LastIndex(in, ",")+1:]
			got, err := outbound.ParseAllow(in)
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) || !strings.Contains(err.Error(), "CONNMGR_EGRESS_ALLOW") {
				t.Errorf("ParseAllow(%q) = %v, %v, want an error naming %q", in, got, err, bad)
			}
		})
	}
}

// FuzzParseAllow checks that ParseAllow never panics, names the variable
// in its errors without echoing much of the input, and returns masked
// prefixes that parse back to themselves.
func FuzzParseAllow(f *testing.F) {
	for _, s := range []string{"", "127.0.0.0/8", " 10.0.0.0 / 8 ,::1,", "::ffff:10.0.0.0/104", "fe80::1%eth0", "1.2.3", "*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		allow, err := outbound.ParseAllow(s)
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, "CONNMGR_EGRESS_ALLOW: ") || len(msg) > 250 {
				t.Fatalf("ParseAllow(%q) error = %q, want a short one naming CONNMGR_EGRESS_ALLOW", s, msg)
			}
			return
		}
		for _, p := range allow {
			again, err := outbound.ParseAllow(p.String())
			if !p.IsValid() || p != p.Masked() || err != nil || len(again) != 1 || again[0] != p {
				t.Fatalf("ParseAllow(%q) gave %v, which parses back as %v, %v", s, p, again, err)
			}
		}
	})
}

// counter is a test server that counts the requests it gets.
func counter(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestDialContext(t *testing.T) {
	srv, hits := counter(t)
	addr := srv.Listener.Addr().String()
	ctx := t.Context()

	t.Run("zero guard refuses loopback", func(t *testing.T) {
		conn, err := new(outbound.Guard).DialContext(ctx, "tcp", addr)
		var de *outbound.DeniedError
		if !errors.As(err, &de) || de.Reason != "loopback address" || !strings.Contains(err.Error(), "CONNMGR_EGRESS_ALLOW") {
			t.Fatalf("DialContext(%q) = %v, %v, want a loopback *DeniedError naming CONNMGR_EGRESS_ALLOW", addr, conn, err)
		}
	})
	t.Run("zero guard refuses localhost by name", func(t *testing.T) {
		_, port, _ := net.SplitHostPort(addr)
		_, err := new(outbound.Guard).DialContext(ctx, "tcp", net.JoinHostPort("localhost", port))
		var de *outbound.DeniedError
		if !errors.As(err, &de) || de.Host != "localhost" {
			t.Fatalf("DialContext(localhost) = %v, want a *DeniedError for host localhost", err)
		}
	})
	t.Run("allowed loopback", func(t *testing.T) {
		resp, err := outboundtest.Loopback(t).Client(5 * time.Second).Get(srv.URL)
		if err != nil {
			t.Fatalf("Get(%s) = %v, want 200", srv.URL, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("Get(%s) = %s, want 200", srv.URL, resp.Status)
		}
	})
	t.Run("tries candidates in order", func(t *testing.T) {
		_, port, _ := net.SplitHostPort(addr)
		g := outboundtest.Loopback(t)
		g.Lookup = func(context.Context, string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("127.0.0.1")}, nil
		}
		conn, err := g.DialContext(ctx, "tcp", net.JoinHostPort("mixed.test", port))
		if err != nil {
			t.Fatalf("DialContext(mixed.test) = %v, want the allowed candidate", err)
		}
		conn.Close()
	})
	if n := hits.Load(); n != 1 {
		t.Errorf("server got %d requests, want 1 (from the allowed client)", n)
	}
}

func TestNumericHostForms(t *testing.T) {
	srv, hits := counter(t)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	client := new(outbound.Guard).Client(3 * time.Second)
	for _, tt := range []struct {
		url        string
		wantDenied bool // otherwise the host may also fail to resolve
	}{
		{"http://2130706433:" + port + "/", false},
		{"http://0177.0.0.1:" + port + "/", false},
		{"http://0x7f.1:" + port + "/", false},
		{"http://[::ffff:127.0.0.1]:" + port + "/", true},
		{"http://[::ffff:7f00:1]:" + port + "/", true},
		{"http://[::ffff:169.254.169.254]/", true},
		{"http://[::127.0.0.1]:" + port + "/", true},
	} {
		t.Run(tt.url, func(t *testing.T) {
			resp, err := client.Get(tt.url)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("Get(%s) = %s, want an error", tt.url, resp.Status)
			}
			t.Logf("Get(%s) = %v", tt.url, err)
			if tt.wantDenied && !errors.Is(err, outbound.ErrEgressDenied) {
				t.Fatalf("Get(%s) = %v, want %v", tt.url, err, outbound.ErrEgressDenied)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("server got %d requests, want 0", n)
	}
}

func TestDNSRebinding(t *testing.T) {
	srv, hits := counter(t)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	var lookups atomic.Int64
	g := &outbound.Guard{Lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
		if lookups.Add(1) == 1 {
			return []netip.Addr{netip.MustParseAddr("93.184.216.34")}, nil
		}
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}}
	client := g.Client(2 * time.Second)
	u := "http://rebind.test:" + port + "/"

	// The first answer is public: the guard lets it through, and the dial
	// fails or times out on this offline machine.
	resp, err := client.Get(u)
	if err == nil {
		resp.Body.Close()
	}
	t.Logf("first Get(%s) = %v", u, err)
	if errors.Is(err, outbound.ErrEgressDenied) {
		t.Fatalf("first Get(%s) = %v, want it not refused by the guard", u, err)
	}
	// The second answer is loopback, and the guard sees it.
	_, err = client.Get(u)
	var de *outbound.DeniedError
	if !errors.As(err, &de) || de.Host != "rebind.test" || de.Addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("second Get(%s) = %v, want a *DeniedError for rebind.test (127.0.0.1)", u, err)
	}
	if n := lookups.Load(); n != 2 {
		t.Errorf("Lookup called %d times, want 2", n)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("server got %d requests, want 0", n)
	}
}

func TestControl(t *testing.T) {
	control := outbound.Control(&outbound.Guard{}, "rebind.test")
	var de *outbound.DeniedError
	if err := control("tcp4", "127.0.0.1:80", nil); !errors.As(err, &de) || de.Host != "rebind.test" {
		t.Errorf("Control(127.0.0.1:80) = %v, want a *DeniedError for rebind.test", err)
	}
	if err := control("tcp6", "[::ffff:169.254.169.254]:80", nil); !errors.Is(err, outbound.ErrEgressDenied) {
		t.Errorf("Control([::ffff:169.254.169.254]:80) = %v, want %v", err, outbound.ErrEgressDenied)
	}
	if err := control("tcp4", "93.184.216.34:443", nil); err != nil {
		t.Errorf("Control(93.184.216.34:443) = %v, want nil", err)
	}
}

func TestNoRedirects(t *testing.T) {
	var second atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/a", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/b", http.StatusFound) })
	mux.HandleFunc("/b", func(w http.ResponseWriter, r *http.Request) { second.Add(1) })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, err := outboundtest.Loopback(t).Client(5 * time.Second).Get(srv.URL + "/a")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/b" {
		t.Errorf("Get(/a) = %s to %q, want 302 to /b", resp.Status, resp.Header.Get("Location"))
	}
	if n := second.Load(); n != 0 {
		t.Errorf("/b got %d requests, want 0", n)
	}
}

func TestProxyEnvIgnored(t *testing.T) {
	proxy, proxied := counter(t)
	target, hits := counter(t)
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
		t.Setenv(k, proxy.URL)
	}
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	// A name, not 127.0.0.1: the standard library never proxies loopback
	// addresses, so only a name shows whether the proxy is used.
	g := outboundtest.Loopback(t)
	g.Lookup = func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	if g.Transport(0).Proxy != nil {
		t.Fatal("Transport().Proxy is set, want nil")
	}
	_, port, _ := net.SplitHostPort(target.Listener.Addr().String())
	resp, err := g.Client(5 * time.Second).Get("http://target.test:" + port + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if p, n := proxied.Load(), hits.Load(); p != 0 || n != 1 {
		t.Errorf("proxy got %d requests and target %d, want 0 and 1", p, n)
	}
}

func TestTransport(t *testing.T) {
	tr := new(outbound.Guard).Transport(7 * time.Second)
	if tr.ResponseHeaderTimeout != 7*time.Second || tr.TLSHandshakeTimeout != 10*time.Second ||
		tr.IdleConnTimeout != 90*time.Second || tr.MaxIdleConns != 512 || tr.MaxIdleConnsPerHost != 256 ||
		!tr.ForceAttemptHTTP2 || tr.ExpectContinueTimeout != time.Second || tr.DialContext == nil ||
		!tr.DisableCompression || tr.Proxy != nil {
		t.Errorf("Transport(7s) = %+v, want the documented settings", tr)
	}
	c := new(outbound.Guard).Client(3 * time.Second)
	if c.Timeout != 3*time.Second || c.CheckRedirect == nil {
		t.Errorf("Client(3s) = %+v, want Timeout 3s and CheckRedirect set", c)
	}
}

func ExampleGuard_Check() {
	allow, err := outbound.ParseAllow("127.0.0.0/8")
	if err != nil {
		panic(err)
	}
	g := &outbound.Guard{Allow: allow}
	fmt.Println(g.Check(netip.MustParseAddr("127.0.0.1")))
	fmt.Println(g.Check(netip.MustParseAddr("::ffff:169.254.169.254")))
	// Output:
	// <nil>
	// connection to ::ffff:169.254.169.254 refused: link-local address (cloud metadata); add it to CONNMGR_EGRESS_ALLOW to allow it
}
