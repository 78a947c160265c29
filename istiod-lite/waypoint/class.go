package waypoint

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
)

// ClassDescription is the description of the GatewayClass this package creates.
const ClassDescription = "Waypoint proxies of the Ambient Lite mesh: istiod-lite deploys one per Gateway of this class"

// ErrForeignClass is returned (wrapped) when the GatewayClass istio-waypoint
// exists with another controllerName: its Gateways belong to that controller.
var ErrForeignClass = errors.New("GatewayClass " + ClassName + " belongs to another controller")

// EnsureGatewayClass makes sure the GatewayClass istio-waypoint exists with
// controllerName istio.io/mesh-controller and reports Accepted=True. It
// creates the class if it is missing (as Istio's class controller does),
// never changes the spec of an existing one, and writes status only when it
// differs. A class with another controllerName is left alone and reported
// as ErrForeignClass.
func EnsureGatewayClass(ctx context.Context, client gatewayclient.Interface) error {
	_, err := ensureGatewayClass(ctx, client, time.Now)
	return err
}

// ensureGatewayClass is EnsureGatewayClass with a clock; it returns what it
// wrote ("GatewayClass", "GatewayClassStatus").
func ensureGatewayClass(ctx context.Context, client gatewayclient.Interface, now func() time.Time) ([]string, error) {
	classes := client.GatewayV1().GatewayClasses()
	var wrote []string
	gc, err := classes.Get(ctx, ClassName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		desc := ClassDescription
		gc, err = classes.Create(ctx, &gatewayv1.GatewayClass{
			ObjectMeta: metav1.ObjectMeta{Name: ClassName},
			Spec: gatewayv1.GatewayClassSpec{
				ControllerName: ControllerName,
				Description:    &desc,
			},
		}, metav1.CreateOptions{FieldManager: FieldManager})
		if apierrors.IsAlreadyExists(err) {
			gc, err = classes.Get(ctx, ClassName, metav1.GetOptions{})
		} else if err == nil {
			wrote = append(wrote, "GatewayClass")
		}
	}
	if err != nil {
		return wrote, fmt.Errorf("GatewayClass %s: %w", ClassName, err)
	}
	if gc.Spec.ControllerName != ControllerName {
		return wrote, fmt.Errorf("%w: its controllerName is %q, not %q; Gateways of this class are left to it",
			ErrForeignClass, gc.Spec.ControllerName, ControllerName)
	}
	st := classStatus(gc, now())
	if equality.Semantic.DeepEqual(st, gc.Status) {
		return wrote, nil
	}
	gc = gc.DeepCopy()
	gc.Status = st
	if _, err := classes.UpdateStatus(ctx, gc, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
		return wrote, fmt.Errorf("GatewayClass %s: update status: %w", ClassName, err)
	}
	return append(wrote, "GatewayClassStatus"), nil
}

// classStatus is the class's status with Accepted=True for its generation.
func classStatus(gc *gatewayv1.GatewayClass, now time.Time) gatewayv1.GatewayClassStatus {
	st := *gc.Status.DeepCopy()
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type:               string(gatewayv1.GatewayClassConditionStatusAccepted),
		Status:             metav1.ConditionTrue,
		Reason:             string(gatewayv1.GatewayClassReasonAccepted),
		Message:            "Handled by istiod-lite",
		ObservedGeneration: gc.Generation,
		LastTransitionTime: metav1.NewTime(now.Truncate(time.Second)),
	})
	return st
}
