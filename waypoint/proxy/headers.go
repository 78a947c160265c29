package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Request headers the waypoint sets on what it forwards.
const (
	headerRequestID   = "X-Request-Id"
	headerTraceparent = "Traceparent"
	headerXFF         = "X-Forwarded-For"
	headerXFProto     = "X-Forwarded-Proto"
	headerXFHost      = "X-Forwarded-Host"
)

// newRequestID returns a random (version 4) UUID, as Envoy generates for
// x-request-id.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// newTraceparent starts a W3C trace: version 00, random trace and parent
// ids, flags 00 (not sampled: the waypoint records no spans by itself).
func newTraceparent() string {
	var b [24]byte
	for {
		rand.Read(b[:])
		if !allZero(b[:16]) && !allZero(b[16:]) {
			break
		}
	}
	return "00-" + hex.EncodeToString(b[:16]) + "-" + hex.EncodeToString(b[16:]) + "-00"
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// validTraceparent reports whether v is a W3C traceparent of version 00
// (or a later version, read as 00 is), with non-zero ids.
func validTraceparent(v string) bool {
	if len(v) < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' || (len(v) > 55 && v[55] != '-') {
		return false
	}
	ver, trace, parent, flags := v[0:2], v[3:35], v[36:52], v[53:55]
	if !isLowerHex(ver) || ver == "ff" || (ver == "00" && len(v) != 55) {
		return false
	}
	return isLowerHex(trace) && isLowerHex(parent) && isLowerHex(flags) &&
		strings.Trim(trace, "0") != "" && strings.Trim(parent, "0") != ""
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// isGRPC reports whether r is a gRPC request (content-type
// application/grpc, application/grpc+proto, ...). gRPC-Web is not: its
// errors are ordinary HTTP responses.
func isGRPC(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	rest, ok := strings.CutPrefix(ct, "application/grpc")
	return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

// gRPC status codes the waypoint answers with.
const (
	grpcPermissionDenied  = 7
	grpcResourceExhausted = 8
	grpcUnimplemented     = 12
	grpcInternal          = 13
	grpcUnavailable       = 14
	grpcUnknown           = 2
)

// grpcStatusFor maps the HTTP status the waypoint would answer to the gRPC
// status it sends instead (gRPC's HTTP-to-gRPC mapping, with every 5xx
// UNAVAILABLE as GRPCRoute asks for invalid backends).
func grpcStatusFor(status int) int {
	switch {
	case status == http.StatusNotFound:
		return grpcUnimplemented
	case status == http.StatusForbidden:
		return grpcPermissionDenied
	case status == http.StatusRequestEntityTooLarge:
		return grpcResourceExhausted
	case status == http.StatusBadRequest:
		return grpcInternal
	case status == http.StatusTooManyRequests || status >= 500:
		return grpcUnavailable
	}
	return grpcUnknown
}

// writeGRPCError answers a gRPC request with a trailers-only response: HTTP
// 200 and the status in the headers.
func writeGRPCError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(code))
	h.Set("Grpc-Message", grpcEncode(msg))
	h.Del("Content-Length")
	w.WriteHeader(http.StatusOK)
}

// grpcEncode percent-encodes a grpc-message (gRPC's HTTP/2 spec: bytes
// outside printable ASCII, and '%').
func grpcEncode(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c > '~' || c == '%' {
			return url.PathEscape(s)
		}
	}
	return s
}

// hopHeaders are removed from mirrored requests (ReverseProxy does it for
// the forwarded one).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopHeaders(h http.Header) {
	for _, f := range h.Values("Connection") {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = strings.TrimSpace(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// headerSize estimates the bytes of a header block as HTTP/1.1 sends it.
func headerSize(h http.Header) int64 {
	var n int64
	for k, vs := range h {
		for _, v := range vs {
			n += int64(len(k) + len(v) + 4)
		}
	}
	return n
}
