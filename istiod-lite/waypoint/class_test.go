package waypoint

import (
	"errors"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
)

func TestEnsureGatewayClass(t *testing.T) {
	ctx := t.Context()
	client := gatewayfake.NewSimpleClientset()
	now := func() time.Time { return time.Unix(5000, 0) }
	wrote, err := ensureGatewayClass(ctx, client, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(wrote) != 2 {
		t.Errorf("first call wrote %v, want the class and its status", wrote)
	}
	gc, err := client.GatewayV1().GatewayClasses().Get(ctx, ClassName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gc.Spec.ControllerName != ControllerName || gc.Spec.Description == nil || *gc.Spec.Description != ClassDescription {
		t.Errorf("spec %+v", gc.Spec)
	}
	c := meta.FindStatusCondition(gc.Status.Conditions, string(gatewayv1.GatewayClassConditionStatusAccepted))
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != "Accepted" {
		t.Errorf("Accepted = %+v", c)
	}
	if wrote, err := ensureGatewayClass(ctx, client, func() time.Time { return time.Unix(6000, 0) }); err != nil || len(wrote) != 0 {
		t.Errorf("second call wrote %v (err %v), want nothing", wrote, err)
	}
}

func TestEnsureGatewayClassForeign(t *testing.T) {
	ctx := t.Context()
	client := gatewayfake.NewSimpleClientset()
	if _, err := client.GatewayV1().GatewayClasses().Create(ctx, &gatewayv1.GatewayClass{
		ObjectMeta: metav1.ObjectMeta{Name: ClassName},
		Spec:       gatewayv1.GatewayClassSpec{ControllerName: "example.com/other"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	client.ClearActions()
	err := EnsureGatewayClass(ctx, client)
	if !errors.Is(err, ErrForeignClass) {
		t.Fatalf("err = %v, want ErrForeignClass", err)
	}
	for _, a := range client.Actions() {
		if a.GetVerb() != "get" {
			t.Errorf("wrote to a foreign class: %v", a)
		}
	}
}
