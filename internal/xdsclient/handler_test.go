package xdsclient

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/anypb"
	"istio.io/istio/pkg/workloadapi"
)

func TestTyped(t *testing.T) {
	good, err := anypb.New(workload(uidOf(1), "10.1.0.1", 1))
	if err != nil {
		t.Fatal(err)
	}
	other, err := anypb.New(policy("p"))
	if err != nil {
		t.Fatal(err)
	}
	garbage := &anypb.Any{TypeUrl: good.TypeUrl, Value: []byte{0xff, 0xff, 0xff}}
	ups := []Resource{
		{Name: "good", Version: "v1", Any: good},
		{Name: "other", Version: "v1", Any: other},
		{Name: "garbage", Version: "v1", Any: garbage},
		{Name: "empty", Version: "v1"},
	}
	badNames := []string{"other", "garbage", "empty"}

	names := func(err error) []string {
		var rs Rejections
		if !errors.As(err, &rs) {
			return nil
		}
		var out []string
		for _, r := range rs {
			out = append(out, r.Name)
		}
		return out
	}

	for _, tc := range []struct {
		name      string
		hErr      error
		want      []string // names rejected, nil when the whole response is
		wantWhole bool
	}{
		{name: "handler accepts", want: badNames},
		{name: "handler rejects one", hErr: Rejections{{"good", errors.New("no")}}, want: append(badNames, "good")},
		{name: "handler rejects all", hErr: errors.New("broken"), wantWhole: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var seen []string
			h := Typed(func(ups []TypedResource[*workloadapi.Address], removals []string) error {
				for _, u := range ups {
					seen = append(seen, u.Name+"@"+u.Version+"="+u.Message.GetWorkload().GetUid())
				}
				if d := cmp.Diff([]string{"gone"}, removals); d != "" {
					t.Errorf("removals (-want +got):\n%s", d)
				}
				return tc.hErr
			})
			err := h(ups, []string{"gone"})
			if d := cmp.Diff([]string{"good@v1=" + uidOf(1)}, seen); d != "" {
				t.Errorf("decoded (-want +got):\n%s", d)
			}
			_, whole := rejected(err)
			if whole != tc.wantWhole {
				t.Fatalf("error %v: whole response rejected = %v, want %v", err, whole, tc.wantWhole)
			}
			if tc.wantWhole {
				if !strings.Contains(err.Error(), "broken") || !strings.Contains(err.Error(), "garbage: decode") {
					t.Errorf("error %q lacks the handler's or the decode failures' reasons", err)
				}
				return
			}
			if d := cmp.Diff(tc.want, names(err)); d != "" {
				t.Errorf("rejected (-want +got):\n%s", d)
			}
		})
	}

	ok := Typed(func([]TypedResource[*workloadapi.Address], []string) error { return nil })
	if err := ok(ups[:1], nil); err != nil {
		t.Errorf("a good resource: %v", err)
	}
}

func TestRejectionsMessage(t *testing.T) {
	err := Rejections{{"a", errors.New("bad port")}, {"b", errors.New("no address")}}
	if got, want := err.Error(), "a: bad port; b: no address"; got != want {
		t.Errorf("Error() = %q, want %q (ztunnel's format)", got, want)
	}
	if names, all := rejected(err); all || len(names) != 2 {
		t.Errorf("rejected = %v, %v", names, all)
	}
}
