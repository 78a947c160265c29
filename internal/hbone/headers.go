package hbone

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"

	"golang.org/x/net/http2"
)

// Header names HBONE uses besides the pseudo-headers.
const (
	headerForwarded   = "forwarded"
	headerBaggage     = "baggage"
	headerTraceparent = "traceparent"
)

// formatForwarded returns the RFC 7239 forwarded value for a client address:
// for="10.0.0.1:1234", for="[::1]:80".
func formatForwarded(client netip.AddrPort) string {
	return `for="` + client.String() + `"`
}

// parseForwardedFor returns the address in the for= parameter of the first
// element of an RFC 7239 forwarded value, or the zero AddrPort if there is
// none or it is not an ip:port (an obfuscated identifier, "unknown", …).
func parseForwardedFor(v string) netip.AddrPort {
	first, _, _ := strings.Cut(v, ",")
	for pair := range strings.SplitSeq(first, ";") {
		name, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || !strings.EqualFold(name, "for") {
			continue
		}
		val = strings.Trim(val, `"`)
		if ap, err := netip.ParseAddrPort(val); err == nil {
			return ap
		}
		if a, err := netip.ParseAddr(strings.Trim(val, "[]")); err == nil {
			return netip.AddrPortFrom(a, 0)
		}
		return netip.AddrPort{}
	}
	return netip.AddrPort{}
}

// newTraceparent returns a fresh W3C trace context header: version 00, random
// trace and span ids, flags 00 (not sampled: we start the trace but record
// nothing, so we leave sampling to whoever does).
func newTraceparent() string {
	var b [55]byte
	copy(b[:], "00-")
	var id [24]byte
	for {
		putUint64(id[0:8], rand.Uint64())
		putUint64(id[8:16], rand.Uint64())
		putUint64(id[16:24], rand.Uint64())
		if !allZero(id[0:16]) && !allZero(id[16:24]) {
			break
		}
	}
	hex.Encode(b[3:35], id[0:16])
	b[35] = '-'
	hex.Encode(b[36:52], id[16:24])
	copy(b[52:], "-00")
	return string(b[:])
}

func putUint64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// validTraceparent reports whether v is a well-formed version-00 W3C
// traceparent with non-zero ids (or a later version whose first 55 bytes are).
func validTraceparent(v string) bool {
	if len(v) < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' || (len(v) > 55 && (v[:2] == "00" || v[55] != '-')) {
		return false
	}
	if v[:2] == "ff" || !isLowerHex(v[0:2]) || !isLowerHex(v[3:35]) || !isLowerHex(v[36:52]) || !isLowerHex(v[53:55]) {
		return false
	}
	return strings.Trim(v[3:35], "0") != "" && strings.Trim(v[36:52], "0") != ""
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// errBadRequest wraps every reason a request is answered with 400.
var errBadRequest = errors.New("bad request")

// parseRequest turns the HEADERS of a new stream into a Request. An error
// means 400; the Request is still filled as far as it could be, for logs.
func parseRequest(f *http2.MetaHeadersFrame, req *Request) error {
	method := f.PseudoValue("method")
	req.Authority = f.PseudoValue("authority")
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case headerForwarded:
			req.Forwarded = hf.Value
		case headerBaggage:
			req.Baggage = hf.Value
		case headerTraceparent:
			req.Traceparent = hf.Value
		}
	}
	if !validTraceparent(req.Traceparent) {
		req.Traceparent = newTraceparent()
	}
	req.ClientAddr = parseForwardedFor(req.Forwarded)
	switch {
	case f.Truncated:
		return fmt.Errorf("%w: header list too large", errBadRequest)
	case method != "CONNECT":
		return fmt.Errorf("%w: method %q, want CONNECT", errBadRequest, method)
	case f.PseudoValue("protocol") != "":
		return fmt.Errorf("%w: extended CONNECT (:protocol %q) is not HBONE", errBadRequest, f.PseudoValue("protocol"))
	case f.PseudoValue("scheme") != "" || f.PseudoValue("path") != "":
		return fmt.Errorf("%w: CONNECT with :scheme or :path", errBadRequest)
	}
	dst, err := parseAuthority(req.Authority)
	if err != nil {
		return err
	}
	req.Destination = dst
	return nil
}

// parseAuthority parses an HBONE :authority, which must be ip:port.
func parseAuthority(a string) (netip.AddrPort, error) {
	if a == "" {
		return netip.AddrPort{}, fmt.Errorf("%w: missing :authority", errBadRequest)
	}
	ap, err := netip.ParseAddrPort(a)
	if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" || !ap.Addr().IsValid() || ap.Addr().IsUnspecified() {
		return netip.AddrPort{}, fmt.Errorf("%w: :authority %q is not a destination ip:port", errBadRequest, a)
	}
	return ap, nil
}
