package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambientlite/mesh/install"
)

// How ambientctl finds the mesh's pods.
const (
	selectorIstiod  = "app=istiod"
	selectorZtunnel = "app=ztunnel"
	// selectorWaypoint matches the pods istiod-lite's waypoint controller
	// creates (Istio's gateway.istio.io/managed label).
	selectorWaypoint = "gateway.istio.io/managed=istio.io-mesh-controller"
	labelGatewayName = "gateway.networking.k8s.io/gateway-name"
)

// listPods lists pods matching selector in namespace ("" = all), sorted by
// namespace and name.
func listPods(ctx context.Context, c *Clients, namespace, selector string) ([]corev1.Pod, error) {
	l, err := c.Kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, fmt.Errorf("list pods %s: %w", selector, err)
	}
	pods := l.Items
	slices.SortFunc(pods, func(a, b corev1.Pod) int {
		return cmpOr(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return pods, nil
}

func cmpOr(cs ...int) int {
	for _, c := range cs {
		if c != 0 {
			return c
		}
	}
	return 0
}

func ztunnelPods(ctx context.Context, c *Clients) ([]corev1.Pod, error) {
	return listPods(ctx, c, install.Namespace, selectorZtunnel)
}

func istiodPods(ctx context.Context, c *Clients) ([]corev1.Pod, error) {
	return listPods(ctx, c, install.Namespace, selectorIstiod)
}

func waypointPods(ctx context.Context, c *Clients) ([]corev1.Pod, error) {
	return listPods(ctx, c, "", selectorWaypoint)
}

// podReady reports whether p runs and its Ready condition is True.
func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// configDump is ztunnel's admin /config_dump, the fields ambientctl reads.
// Raw keeps every section as sent, for -o json/yaml.
type configDump struct {
	Certificates []certInfo    `json:"certificates"`
	Connections  []connInfo    `json:"connections"`
	Pods         []enrolledPod `json:"pods"`
	State        struct {
		Workloads []dumpWorkload `json:"workloads"`
		Services  []dumpService  `json:"services"`
		Policies  []dumpPolicy   `json:"policies"`
	} `json:"state"`
	XDS xdsClientStatus `json:"xds"`

	Raw struct {
		Certificates, Connections, Pods, XDS json.RawMessage
		Workloads, Services, Policies        json.RawMessage
	} `json:"-"`
}

type certInfo struct {
	Identity  string    `json:"identity"`
	Pods      int       `json:"pods"`
	State     string    `json:"state"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	RenewAt   time.Time `json:"renewAt"`
	Error     string    `json:"error"`
}

type connInfo struct {
	ID            uint64    `json:"id"`
	Direction     string    `json:"direction"`
	Pod           string    `json:"pod"`
	Src           string    `json:"src"`
	Dst           string    `json:"dst"`
	HBONEAddr     string    `json:"hbone_addr"`
	SrcIdentity   string    `json:"src_identity"`
	DstIdentity   string    `json:"dst_identity"`
	DstService    string    `json:"dst_service"`
	Security      string    `json:"security"`
	BytesReceived int64     `json:"bytes_received"`
	BytesSent     int64     `json:"bytes_sent"`
	Start         time.Time `json:"start"`
}

type enrolledPod struct {
	UID, Namespace, Name string
	IPs                  []string
	Acked                bool
}

type gatewayAddress struct {
	Destination string `json:"destination"`
	Port        int    `json:"hboneMtlsPort"`
}

type dumpWorkload struct {
	UID            string          `json:"uid"`
	IPs            []string        `json:"workloadIps"`
	Waypoint       *gatewayAddress `json:"waypoint"`
	Protocol       string          `json:"protocol"`
	HostNetwork    bool            `json:"hostNetwork"`
	Name           string          `json:"name"`
	Namespace      string          `json:"namespace"`
	TrustDomain    string          `json:"trustDomain"`
	ServiceAccount string          `json:"serviceAccount"`
	Node           string          `json:"node"`
	Status         string          `json:"status"`
}

type dumpService struct {
	Name      string          `json:"name"`
	Namespace string          `json:"namespace"`
	Hostname  string          `json:"hostname"`
	VIPs      []string        `json:"vips"`
	Waypoint  *gatewayAddress `json:"waypoint"`
	Endpoints map[string]struct {
		Status string `json:"status"`
	} `json:"endpoints"`
}

type dumpPolicy struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Scope     string `json:"scope"`
	Action    string `json:"action"`
	DryRun    bool   `json:"dryRun"`
}

type xdsClientStatus struct {
	Address   string    `json:"address"`
	State     string    `json:"state"`
	Connected bool      `json:"connected"`
	Synced    bool      `json:"synced"`
	LastError string    `json:"lastError"`
	Types     []xdsType `json:"types"`
}

type xdsType struct {
	TypeURL       string    `json:"typeUrl"`
	Resources     int       `json:"resources"`
	SystemVersion string    `json:"systemVersion"`
	LastAck       time.Time `json:"lastAck"`
	NACKs         int       `json:"nacks"`
}

func parseConfigDump(b []byte) (*configDump, error) {
	d := &configDump{}
	if err := json.Unmarshal(b, d); err != nil {
		return nil, fmt.Errorf("config_dump: %w", err)
	}
	var top struct {
		Certificates, Connections, Pods, XDS json.RawMessage
		State                                struct{ Workloads, Services, Policies json.RawMessage }
	}
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("config_dump: %w", err)
	}
	d.Raw.Certificates, d.Raw.Connections, d.Raw.Pods, d.Raw.XDS = top.Certificates, top.Connections, top.Pods, top.XDS
	d.Raw.Workloads, d.Raw.Services, d.Raw.Policies = top.State.Workloads, top.State.Services, top.State.Policies
	return d, nil
}

// fetchConfigDump reads ztunnel pod's /config_dump.
func fetchConfigDump(ctx context.Context, c *Clients, pod *corev1.Pod) (*configDump, error) {
	b, err := c.Admin.Get(ctx, pod.Namespace, pod.Name, ztunnelAdminPort, ztunnelConfigDump)
	if err != nil {
		return nil, err
	}
	return parseConfigDump(b)
}

// syncz is istiod-lite's /debug/syncz: its store and every config stream
// open on this replica.
type syncz struct {
	Leader     bool           `json:"leader"`
	Generation uint64         `json:"generation"`
	Streams    []streamStatus `json:"streams"`
}

type streamStatus struct {
	ID     uint64 `json:"ID"`
	NodeID string `json:"NodeID"`
	Proxy  struct {
		Identity string `json:"Identity"`
		Node     string `json:"Node"`
	} `json:"Proxy"`
	ConnectedAt time.Time          `json:"ConnectedAt"`
	Types       []streamTypeStatus `json:"Types"`
}

type streamTypeStatus struct {
	TypeURL    string    `json:"TypeURL"`
	Wildcard   bool      `json:"Wildcard"`
	Subscribed int       `json:"Subscribed"`
	Acked      int       `json:"Acked"`
	LastAck    time.Time `json:"LastAck"`
	LastNack   string    `json:"LastNack"`
	LastNackAt time.Time `json:"LastNackAt"`
	NACKs      int       `json:"NACKs"`
	InFlight   string    `json:"InFlight"`
	Waiting    bool      `json:"Waiting"`
}

// podKey is the "<namespace>/<pod>" of a stream's node id
// ("<type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>"), or "".
func (s streamStatus) podKey() string {
	parts := strings.Split(s.NodeID, "~")
	if len(parts) < 3 {
		return ""
	}
	i := strings.LastIndex(parts[2], ".")
	if i < 0 {
		return ""
	}
	return parts[2][i+1:] + "/" + parts[2][:i]
}

// istiodView is what one istiod replica said.
type istiodView struct {
	Pod   corev1.Pod
	Syncz *syncz
	Err   error
}

// readIstiods reads /debug/syncz of every running istiod pod.
func readIstiods(ctx context.Context, c *Clients) ([]istiodView, error) {
	pods, err := istiodPods(ctx, c)
	if err != nil {
		return nil, err
	}
	out := make([]istiodView, 0, len(pods))
	for _, p := range pods {
		// A pod that does not run holds no stream.
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		v := istiodView{Pod: p}
		if b, err := c.Admin.Get(ctx, p.Namespace, p.Name, istiodMonitorPort, istiodSyncz); err != nil {
			v.Err = err
		} else {
			s := &syncz{}
			if err := json.Unmarshal(b, s); err != nil {
				v.Err = fmt.Errorf("syncz: %w", err)
			} else {
				v.Syncz = s
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// shortType names a type URL as the tables do.
func shortType(typeURL string) string {
	switch typeURL {
	case "type.googleapis.com/istio.workload.Address":
		return "addresses"
	case "type.googleapis.com/istio.security.Authorization":
		return "authorization"
	case "type.googleapis.com/ambientlite.route.v1.ServiceRoutes":
		return "routes"
	}
	return typeURL[strings.LastIndex(typeURL, "/")+1:]
}
