package xdsclient

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Resource is one named resource as the control plane sent it.
type Resource struct {
	Name string
	// Version is the server's version of this content (istiod-lite: a hash
	// of it). The client sends it back in initial_resource_versions.
	Version string
	// Any is the resource; nil if the server sent none.
	Any *anypb.Any
}

// Handler applies one response of a type: resources added or changed,
// and the names of resources removed. It is called on Run's goroutine,
// one response at a time in the order received, and should not block.
//
// A nil error ACKs the response: the client records the new versions.
// A non-nil error NACKs it with the error's text as error_detail: the
// handler must then have kept its previous state, and the client keeps
// the previous versions, so a reconnect asks for the rejected content
// again. A Rejections error (errors.As) instead rejects only the resources
// it names: the rest counts as applied, as ztunnel does.
//
// removals may name resources the handler never saw: the server's way of
// saying that a subscribed name does not exist, or a removal the handler
// refused earlier. upserts and removals may both be empty (the first
// response of an empty type).
type Handler func(upserts []Resource, removals []string) error

// Rejection is one resource a handler refused, and why.
type Rejection struct {
	Name string
	Err  error
}

// Rejections is the error of a handler that applied a response except the
// resources it lists. The client NACKs the response with every reason,
// joined by "; " as ztunnel does, and records the versions of the rest.
// An empty Rejections is success.
type Rejections []Rejection

func (r Rejections) Error() string {
	parts := make([]string, len(r))
	for i, rj := range r {
		parts[i] = rj.Name + ": " + rj.Err.Error()
	}
	return strings.Join(parts, "; ")
}

// Unwrap returns the reasons, for errors.Is and errors.As.
func (r Rejections) Unwrap() []error {
	errs := make([]error, len(r))
	for i, rj := range r {
		errs[i] = rj.Err
	}
	return errs
}

// rejected returns the names a handler's error rejects: all (nil, true)
// for a plain error, some for Rejections, none (nil, false) for nil.
func rejected(err error) (names map[string]bool, all bool) {
	if err == nil {
		return nil, false
	}
	var rs Rejections
	if !errors.As(err, &rs) {
		return nil, true
	}
	names = make(map[string]bool, len(rs))
	for _, r := range rs {
		names[r.Name] = true
	}
	return names, false
}

// TypedResource is a Resource decoded into its message.
type TypedResource[M proto.Message] struct {
	Name    string
	Version string
	Message M
}

// Typed adapts a handler of decoded messages of type M (such as
// *workloadapi.Address). A resource that is missing, of another type or
// does not decode is rejected by name, as ztunnel does, and not passed
// to h; the others are. h's own error is merged: Rejections add to the
// decode failures; any other error rejects the whole response.
func Typed[M proto.Message](h func(upserts []TypedResource[M], removals []string) error) Handler {
	var zero M
	want := zero.ProtoReflect().Descriptor().FullName()
	return func(upserts []Resource, removals []string) error {
		var bad Rejections
		typed := make([]TypedResource[M], 0, len(upserts))
		for _, r := range upserts {
			if r.Any == nil {
				bad = append(bad, Rejection{r.Name, errors.New("xds resource without payload")})
				continue
			}
			if got := r.Any.MessageName(); got != want {
				bad = append(bad, Rejection{r.Name, fmt.Errorf("resource is a %s, want %s", got, want)})
				continue
			}
			m := zero.ProtoReflect().New().Interface().(M)
			if err := proto.Unmarshal(r.Any.GetValue(), m); err != nil {
				bad = append(bad, Rejection{r.Name, fmt.Errorf("decode: %w", err)})
				continue
			}
			typed = append(typed, TypedResource[M]{Name: r.Name, Version: r.Version, Message: m})
		}
		err := h(typed, removals)
		switch _, all := rejected(err); {
		case err == nil && len(bad) == 0:
			return nil
		case err == nil:
			return bad
		case all && len(bad) == 0:
			return err
		case all:
			return fmt.Errorf("%w; %s", err, bad.Error())
		}
		var rs Rejections
		errors.As(err, &rs)
		return append(bad, rs...)
	}
}
