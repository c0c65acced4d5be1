package outbound

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// allowEnv is the variable operators set to open the guard; refusals name
// it so that the fix is in the error message.
const allowEnv = "CONNMGR_EGRESS_ALLOW"

// ErrEgressDenied means the egress guard refused to connect to an address.
// Errors from Guard are *DeniedError values for which errors.Is reports
// true.
var ErrEgressDenied = errors.New("egress denied")

// DeniedError says which address the guard refused and why.
type DeniedError struct {
	Host   string     // the name that resolved to Addr; empty for an IP literal
	Addr   netip.Addr // the address refused
	Reason string     // the category, such as "loopback address"
}

// Error names the address, the reason, and the variable that would allow
// it.
func (e *DeniedError) Error() string {
	target := e.Addr.String()
	if e.Host != "" {
		target = e.Host + " (" + target + ")"
	}
	return "connection to " + target + " refused: " + e.Reason + "; add it to " + allowEnv + " to allow it"
}

// Is reports whether target is ErrEgressDenied.
func (e *DeniedError) Is(target error) bool { return target == ErrEgressDenied }

// embedded is the reason for IPv6 ranges that carry an IPv4 address a
// translator or tunnel may deliver to, whatever that address is.
const embedded = "IPv4-embedded IPv6 address"

// denied lists the ranges refused unless allowed, most specific first where
// they overlap. IPv4-mapped addresses (::ffff:0:0/96) are not listed: they
// are unmapped and judged as IPv4.
var denied = []struct {
	prefix netip.Prefix
	reason string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified address"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback address"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private address"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private address"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private address"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local address (cloud metadata)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT address"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignment address"}, // includes Oracle Cloud's metadata 192.0.0.192
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking address"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast address"},
	{netip.MustParsePrefix("255.255.255.255/32"), "broadcast address"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved address"},
	{netip.MustParsePrefix("::/128"), "unspecified address"},
	{netip.MustParsePrefix("::1/128"), "loopback address"},
	{netip.MustParsePrefix("::/96"), embedded},           // IPv4-compatible
	{netip.MustParsePrefix("::ffff:0:0:0/96"), embedded}, // IPv4-translated (SIIT)
	{netip.MustParsePrefix("64:ff9b::/96"), embedded},    // NAT64
	{netip.MustParsePrefix("64:ff9b:1::/48"), embedded},  // local-use NAT64
	{netip.MustParsePrefix("2002::/16"), embedded},       // 6to4
	{netip.MustParsePrefix("2001::/32"), embedded},       // Teredo
	{netip.MustParsePrefix("fe80::/10"), "link-local address"},
	{netip.MustParsePrefix("fec0::/10"), "site-local IPv6 address"},
	{netip.MustParsePrefix("fc00::/7"), "unique-local IPv6 address"}, // includes AWS's metadata fd00:ec2::254
	{netip.MustParsePrefix("ff00::/8"), "multicast address"},
}

// ParseAllow parses the value of CONNMGR_EGRESS_ALLOW: comma-separated
// CIDRs or single IP addresses, whitespace and empty entries ignored. An
// IPv4-mapped entry (::ffff:10.0.0.0/104) is stored as its IPv4 prefix.
// An empty string gives nil. Errors name the bad entry.
func ParseAllow(s string) ([]netip.Prefix, error) {
	var allow []netip.Prefix
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.Join(strings.Fields(entry), "")
		if entry == "" {
			continue
		}
		var p netip.Prefix
		var err error
		if strings.Contains(entry, "/") {
			p, err = netip.ParsePrefix(entry)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(entry); err == nil && a.Zone() != "" {
				err = errors.New("zones are not allowed")
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s is not an IP address or CIDR", allowEnv, quoteShort(entry))
		}
		allow = append(allow, unmapPrefix(p.Masked()))
	}
	return allow, nil
}

// unmapPrefix turns a prefix inside ::ffff:0:0/96 into its IPv4 prefix, so
// that it matches the unmapped addresses Check compares it with.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked()
	}
	return p
}

// Guard decides which addresses outbound connections may reach. The zero
// value allows public addresses only. A Guard must not be changed once in
// use; it is then safe for concurrent use.
type Guard struct {
	// Allow lists prefixes allowed even though they are not public, as
	// parsed by ParseAllow.
	Allow []netip.Prefix
	// Lookup resolves a host name; nil means net.DefaultResolver.LookupNetIP
	// (for "ip", or "ip4"/"ip6" when dialing "tcp4"/"tcp6"). Tests replace
	// it.
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
}

// Check returns nil if connections to addr are allowed, or a *DeniedError
// (with Host empty) saying why not. An IPv4-mapped address is judged as
// the IPv4 address it maps, and Allow entries match it too.
func (g *Guard) Check(addr netip.Addr) error {
	if d := g.verdict(addr); d != nil {
		return d
	}
	return nil
}

func (g *Guard) verdict(addr netip.Addr) *DeniedError {
	if !addr.IsValid() {
		return &DeniedError{Addr: addr, Reason: "invalid address"}
	}
	// A prefix never contains an address with a zone, so drop it first.
	a := addr.WithZone("").Unmap()
	if g != nil {
		for _, p := range g.Allow {
			if unmapPrefix(p).Contains(a) {
				return nil
			}
		}
	}
	for _, d := range denied {
		if d.prefix.Contains(a) {
			return &DeniedError{Addr: addr, Reason: d.reason}
		}
	}
	return nil
}

// DialContext connects like net.Dialer.DialContext, but only to allowed
// addresses. It resolves the host itself, checks every candidate address
// and dials the checked address, never the name, so the address checked is
// the address connected even if DNS answers differently a second later
// (rebinding). A net.Dialer.Control hook checks the socket's remote address
// again just before connecting. Candidates are tried in order until one
// connects. If every candidate is refused, the error is the first
// *DeniedError; if any allowed candidate failed to connect, the error is
// the last such failure.
func (g *Guard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs, host = []netip.Addr{a}, ""
	} else if addrs, err = g.lookup(ctx, network, host); err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: g.control(host)}
	var refused *DeniedError
	var dialErr error
	for _, a := range addrs {
		if !fits(network, a) {
			continue
		}
		if v := g.verdict(a); v != nil {
			v.Host = host
			if refused == nil {
				refused = v
			}
			continue
		}
		conn, err := d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return conn, nil
		}
		dialErr = err
		if ctx.Err() != nil {
			break
		}
	}
	switch {
	case dialErr != nil:
		return nil, dialErr
	case refused != nil:
		return nil, refused
	}
	return nil, &net.DNSError{Err: "no address for network " + network, Name: host, IsNotFound: true}
}

// lookup resolves host for network with g.Lookup or the default resolver.
func (g *Guard) lookup(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if g != nil && g.Lookup != nil {
		return g.Lookup(ctx, host)
	}
	ipnet := "ip"
	switch {
	case strings.HasSuffix(network, "4"):
		ipnet = "ip4"
	case strings.HasSuffix(network, "6"):
		ipnet = "ip6"
	}
	return net.DefaultResolver.LookupNetIP(ctx, ipnet, host)
}

// fits reports whether a can be dialed on network ("tcp4" wants IPv4).
func fits(network string, a netip.Addr) bool {
	switch {
	case strings.HasSuffix(network, "4"):
		return a.Unmap().Is4()
	case strings.HasSuffix(network, "6"):
		return !a.Unmap().Is4()
	}
	return true
}

// control returns a net.Dialer.Control hook that checks the address the
// socket is about to connect to. DialContext only dials checked addresses;
// the hook judges what the kernel is actually given, so a later change that
// hands the dialer a name, or an address form parsed differently, still
// cannot reach a refused address.
func (g *Guard) control(host string) func(network, address string, c syscall.RawConn) error {
	return func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("egress guard: cannot check dial address %q: %w", address, err)
		}
		if v := g.verdict(ap.Addr()); v != nil {
			v.Host = host
			return v
		}
		return nil
	}
}

// quoteShort quotes s, cut to 40 bytes, so that an error message does not
// echo a huge input back.
func quoteShort(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return strconv.Quote(s)
}
