package themis_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	themis "github.com/themisdb/go-client"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ownFacade is a facade process of the test's own on the shared broker and worker.
type ownFacade struct {
	cmd        *exec.Cmd
	httpPort   int
	binaryPort int
}

func startFacade(t *testing.T, s *stack, httpPort, binaryPort int, dataDir string) *ownFacade {
	t.Helper()
	args := append(append([]string{}, s.Themis[1:]...), "facade", "--host", "127.0.0.1", "--port", strconv.Itoa(httpPort), "--binary-port", strconv.Itoa(binaryPort))
	cmd := exec.Command(s.Themis[0], args...)
	env := os.Environ()
	for k, v := range s.FacadeEnv {
		env = append(env, k+"="+v)
	}
	// Its own data directory: the replica state of the replication routes lives there.
	env = append(env, "THEMIS_FACADE_PORT="+strconv.Itoa(httpPort), "THEMIS_FACADE_BINARY_PORT="+strconv.Itoa(binaryPort),
		"THEMIS_WORKER_DATA_DIR="+dataDir)
	cmd.Env = env
	logf, err := os.Create(filepath.Join(t.TempDir(), "facade.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &ownFacade{cmd: cmd, httpPort: httpPort, binaryPort: binaryPort}
	t.Cleanup(func() { f.kill(syscall.SIGTERM) })
	deadline := time.Now().Add(60 * time.Second)
	for {
		hc, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", binaryPort), time.Second)
		if err == nil {
			hc.Close()
			if hh, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", httpPort), time.Second); err == nil {
				hh.Close()
				return f
			}
		}
		if time.Now().After(deadline) {
			raw, _ := os.ReadFile(logf.Name())
			t.Fatalf("own facade did not listen within 60 s:\n%s", raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (f *ownFacade) kill(sig syscall.Signal) {
	if f.cmd.Process == nil || f.cmd.ProcessState != nil {
		return
	}
	_ = syscall.Kill(-f.cmd.Process.Pid, sig)
	done := make(chan struct{})
	go func() { _, _ = f.cmd.Process.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-f.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	f.cmd.ProcessState = &os.ProcessState{}
}

// TestFacadeRestartMidWriteLosesNothingAcknowledged kills (SIGKILL) a facade of
// the test's own while both doors write through it, starts it again on the same
// ports, and checks that every point the writers report as written is stored.
func TestFacadeRestartMidWriteLosesNothingAcknowledged(t *testing.T) {
	s := needStack(t)
	if len(s.Themis) == 0 {
		t.Skip("stack.json names no themis command")
	}
	hp, bp := freePort(t), freePort(t)
	dataDir := t.TempDir()
	f := startFacade(t, s, hp, bp, dataDir)
	conns := map[string]string{
		"http":   fmt.Sprintf("http::addr=127.0.0.1:%d;api_key=%s", hp, s.Keys["writer"]),
		"binary": fmt.Sprintf("themis::addr=127.0.0.1:%d;api_key=%s", bp, s.Keys["writer"]),
	}
	const n = 20_000
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	metrics := map[string]string{}
	clients := map[string]*themis.Client{}
	var wg sync.WaitGroup
	halfway := make(chan struct{}, 2)
	for name, conn := range conns {
		c, err := themis.New(conn + ";auto_flush_rows=500;auto_flush_interval_ms=50;max_retries=100;retry_timeout_ms=90000;retry_max_backoff_ms=1000;request_timeout_ms=3000")
		if err != nil {
			t.Fatal(err)
		}
		clients[name] = c
		metric := "go_restart_" + name + "_" + suffix()
		metrics[name] = metric
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := time.Now().UnixMilli() - 600_000
			for i := 0; i < n; i++ {
				if i == n/2 {
					halfway <- struct{}{}
				}
				if err := c.TimeSeries.PutBuffered(ctx, themis.DataPoint{Metric: metric, Entity: "e", TimestampMs: base + int64(i), Value: float64(i)}); err != nil {
					t.Errorf("%s: write %d: %v", name, i, err)
					return
				}
				if i%100 == 0 {
					time.Sleep(2 * time.Millisecond) // spread the writes over the restart
				}
			}
		}()
	}
	<-halfway
	<-halfway
	f.kill(syscall.SIGKILL)
	time.Sleep(500 * time.Millisecond)
	startFacade(t, s, hp, bp, dataDir)
	wg.Wait()
	q := newClient(t, doors[0], "writer")
	for name, c := range clients {
		err := c.Close(ctx)
		st := c.TimeSeries.WriterStats()
		t.Logf("%s: %+v (close: %v)", name, st, err)
		if err != nil || st.Sent != n || st.Retried == 0 {
			t.Fatalf("%s: close %v, stats %+v: want every point acknowledged after retries", name, err, st)
		}
		metric := metrics[name]
		eventually(t, 60*time.Second, func() error {
			r, err := q.TimeSeries.Query(ctx, themis.Query{Metric: metric, Entity: "e"})
			if err != nil {
				return err
			}
			if r.Count != n {
				return fmt.Errorf("%s: %d of %d acknowledged points stored", name, r.Count, n)
			}
			return nil
		})
	}
}
