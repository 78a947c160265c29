package router

import (
	"net/http"
	"net/url"
	"strings"
)

// NormalizePath normalises req's path as Istio's default path
// normalisation (BASE: Envoy's normalize_path) does, before Match: RFC 3986
// §6.2.2 — percent-encoded unreserved characters (ALPHA, DIGIT, "-", ".",
// "_", "~") are decoded, other percent-encodings get upper-case hex — and
// §5.2.4, dot segments ("." and "..") are removed. An encoded "/" (%2F)
// stays encoded and "//" stays: they are not path separators for the
// matching. It reports whether the path changed; the request then carries
// the normalised path upstream too (so what was matched is what is sent).
// It does not allocate when the path is already normal.
//
// Without it, "/a/../admin" and "/%61dmin" do not match a rule for
// "/admin", while a backend that normalises itself serves them as
// "/admin".
func NormalizePath(req *http.Request) bool {
	if req.URL == nil {
		return false
	}
	p := req.URL.EscapedPath()
	n := normalizePath(p)
	if n == p {
		return false
	}
	setEscapedPath(req.URL, n)
	return true
}

func normalizePath(p string) string {
	if !strings.HasPrefix(p, "/") || !needsNormalizing(p) {
		return p
	}
	if strings.IndexByte(p, '%') >= 0 {
		p = normalizeEscapes(p)
	}
	return removeDotSegments(p)
}

// needsNormalizing reports whether p has a percent-encoding or a "." or
// ".." segment.
func needsNormalizing(p string) bool {
	if strings.IndexByte(p, '%') >= 0 {
		return true
	}
	for i := 0; i+1 < len(p); i++ {
		if p[i] != '/' || p[i+1] != '.' {
			continue
		}
		j := i + 2
		if j < len(p) && p[j] == '.' {
			j++
		}
		if j == len(p) || p[j] == '/' {
			return true
		}
	}
	return false
}

func normalizeEscapes(p string) string {
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		if p[i] != '%' || i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			b.WriteByte(p[i])
			continue
		}
		c := unhex(p[i+1])<<4 | unhex(p[i+2])
		if isUnreserved(c) {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteByte(upperHex(p[i+1]))
			b.WriteByte(upperHex(p[i+2]))
		}
		i += 2
	}
	return b.String()
}

// removeDotSegments is RFC 3986 §5.2.4 for an absolute path.
func removeDotSegments(p string) string {
	segs := strings.Split(p[1:], "/")
	out := segs[:0]
	trailing := false // the last segment was a dot segment: keep a trailing "/"
	for i, s := range segs {
		switch s {
		case ".", "..":
			if s == ".." && len(out) > 0 {
				out = out[:len(out)-1]
			}
			trailing = i == len(segs)-1
		default:
			out = append(out, s)
		}
	}
	n := "/" + strings.Join(out, "/")
	if trailing && len(out) > 0 {
		n += "/"
	}
	return n
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

func upperHex(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// setEscapedPath sets u's path from its escaped form esc: Path decoded,
// RawPath esc when that is not the default encoding of Path.
func setEscapedPath(u *url.URL, esc string) {
	p, err := url.PathUnescape(esc)
	if err != nil { // not a valid escaped path: keep it as it is
		u.Path, u.RawPath = esc, ""
		return
	}
	u.Path, u.RawPath = p, ""
	if u.EscapedPath() != esc {
		u.RawPath = esc
	}
}
