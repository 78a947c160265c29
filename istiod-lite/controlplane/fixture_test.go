package controlplane

import (
	"context"
	"net"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/ambientlite/mesh/istiod-lite/kube"
	"github.com/ambientlite/mesh/istiod-lite/xds"
)

// fakeAPI is the API server the tests write to: fake clientsets behind a
// real, started and synced kube.Cache.
type fakeAPI struct {
	kube    *fake.Clientset
	gateway *gatewayfake.Clientset
	dynamic *dynamicfake.FakeDynamicClient
	cache   *kube.Cache
}

// startFakeAPI starts the informers on fake clients holding objs (core
// objects), gws and dyn (unstructured security.istio.io objects), and waits
// for them to sync.
func startFakeAPI(ctx context.Context, t *testing.T, objs []k8sruntime.Object, gws []*gatewayv1.Gateway, dyn []k8sruntime.Object) *fakeAPI {
	t.Helper()
	api := &fakeAPI{
		kube:    fake.NewClientset(objs...),
		gateway: gatewayfake.NewSimpleClientset(),
		dynamic: dynamicfake.NewSimpleDynamicClientWithCustomListKinds(k8sruntime.NewScheme(), map[schema.GroupVersionResource]string{
			kube.AuthorizationPolicyResource: "AuthorizationPolicyList",
			kube.PeerAuthenticationResource:  "PeerAuthenticationList",
		}, dyn...),
	}
	// Created through the typed client: the fake's object tracker files a
	// Gateway passed to NewSimpleClientset under another API version
	// (v1beta1 aliases the v1 type), where v1 informers never see it.
	for _, gw := range gws {
		if _, err := api.gateway.GatewayV1().Gateways(gw.Namespace).Create(ctx, gw, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	kc, err := kube.NewCache(kube.Clients{Kube: api.kube, Gateway: api.gateway, Dynamic: api.dynamic})
	if err != nil {
		t.Fatal(err)
	}
	kc.Start(ctx)
	if err := kc.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	api.cache = kc
	return api
}

type anyAuth struct{}

func (anyAuth) Authenticate(context.Context) (xds.Proxy, error) {
	return xds.Proxy{Identity: "spiffe://cluster.local/ns/istio-system/sa/ztunnel"}, nil
}

// serveXDS serves store on a loopback gRPC listener and opens one delta ADS
// stream to it; both end with the test.
func serveXDS(ctx context.Context, t *testing.T, store *xds.Store) discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
	t.Helper()
	srv, err := xds.NewServer(xds.Config{Store: store, Authenticator: anyAuth{}})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	srv.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

// ack acknowledges a response on stream.
func ack(t *testing.T, stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, r *discovery.DeltaDiscoveryResponse) {
	t.Helper()
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce}); err != nil {
		t.Fatal(err)
	}
}
