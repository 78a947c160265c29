package l4bench

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    procTimes
		wantErr bool
	}{
		{
			name: "plain",
			in:   "4242 (ztunnel) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 125 7 3 20 0 9 0 123456 1000000 2000 18446744073709551615\n",
			want: procTimes{Self: 3.75, Children: 0.10},
		},
		{
			name: "command with spaces and parentheses",
			in:   "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 1 2 300 0 20 0 1 0 0 0 0\n",
			want: procTimes{Self: 0.03, Children: 3},
		},
		{name: "no command", in: "7 a R 1", wantErr: true},
		{name: "too short", in: "7 (a) R 1 7 7 0 -1 0 0 0 0 0 1 2", wantErr: true},
		{name: "not a number", in: "7 (a) R 1 7 7 0 -1 0 0 0 0 0 x 2 0 0 20", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseSchedStat(t *testing.T) {
	got, err := parseSchedStat([]byte("2038000000 9734000000 34806\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (SchedStat{Run: 2038 * time.Millisecond, Wait: 9734 * time.Millisecond, Slices: 34806}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	for _, bad := range []string{"", "1 2", "1 x 3"} {
		if _, err := parseSchedStat([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseStatusMemory(t *testing.T) {
	status := "Name:\tztunnel\nVmPeak:\t 1300000 kB\nVmHWM:\t   24576 kB\nVmRSS:\t   20480 kB\nRssAnon:\t    6144 kB\nRssFile:\t   14336 kB\nThreads:\t9\n"
	got, err := parseStatusMemory([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	if want := (ProcMemory{RSS: 20 << 20, Anon: 6 << 20, Peak: 24 << 20}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// Kernel threads and zombies have no VmRSS.
	if _, err := parseStatusMemory([]byte("Name:\tkthreadd\nState:\tS\n")); err == nil {
		t.Error("no error without VmRSS")
	}
	if _, err := parseStatusMemory([]byte("VmRSS:\t 12 MB\nVmHWM:\t 1 kB\n")); err == nil {
		t.Error("no error for a unit other than kB")
	}
}

func TestParseHostCPU(t *testing.T) {
	stat := "cpu  1000 10 500 8000 200 5 15 20 30 0\ncpu0 500 5 250 4000 100 2 7 10 15 0\nintr 1\n"
	got, err := parseHostCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	// busy: user+nice+system+irq+softirq+steal; guest is inside user.
	if want := (hostCPU{Busy: 15.50, Total: 97.50}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := parseHostCPU([]byte("cpu0 1 2 3 4 5 6 7 8\n")); err == nil {
		t.Error("no error when the first line is not the total")
	}
}

func TestTCPListening(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2760 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0200FE0A:28BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
   3: 0100FE0A:9C40 0200FE0A:2BC3 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 100 0 0 10 0
`
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:10080", true},   // 0100007F:2760
		{"10.254.0.2:10427", true},  // 0200FE0A:28BB
		{"10.254.0.2:8080", true},   // the wildcard 0.0.0.0:1F90
		{"10.254.0.1:40000", false}, // established, not listening
		{"127.0.0.1:10081", false},
		{"10.254.0.1:10427", false},
	} {
		got, err := tcpListening([]byte(table), netip.MustParseAddrPort(tc.addr))
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%s: listening = %v, want %v", tc.addr, got, tc.want)
		}
	}
	if _, err := tcpListening([]byte("header\n 0: XYZ:2760 00000000:0000 0A\n"), netip.MustParseAddrPort("127.0.0.1:1")); err == nil {
		t.Error("no error for a malformed address")
	}
}

// TestOwnProcess reads this test process's own files, which exist on any
// Linux machine (no root needed).
func TestOwnProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	if _, err := ProcCPU(os.Getpid()); err != nil {
		t.Error(err)
	}
	m, err := ReadProcMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.Anon <= 0 || m.RSS < m.Anon || m.Peak < m.RSS {
		t.Errorf("memory %+v: want 0 < anon <= RSS <= peak", m)
	}
	h, err := readHostCPU()
	if err != nil {
		t.Fatal(err)
	}
	if h.Busy <= 0 || h.Total < h.Busy {
		t.Errorf("host CPU %+v: want 0 < busy <= total", h)
	}
}
