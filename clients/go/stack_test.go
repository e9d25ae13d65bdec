package themis_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	themis "github.com/themisdb/go-client"
)

// stack is the live stack's stack.json.
type stack struct {
	Dir        string            `json:"dir"`
	PID        int               `json:"pid"`
	HTTPAddr   string            `json:"http_addr"`
	BinaryAddr string            `json:"binary_addr"`
	Keys       map[string]string `json:"keys"`
	Conf       map[string]string `json:"conf"`
	Dimension  int               `json:"vector_dimension"`
	Themis     []string          `json:"themis"`
	FacadeEnv  map[string]string `json:"facade_env"`
	Replica    struct {
		HTTPSURL   string `json:"https_url"`
		BinaryAddr string `json:"binary_addr"`
		CA         string `json:"ca"`
		ClientCert string `json:"client_cert"`
		ClientKey  string `json:"client_key"`
	} `json:"replica"`
}

var live *stack

func readStack(path string) (*stack, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s stack
	return &s, json.Unmarshal(raw, &s)
}

// TestMain finds the stack through THEMIS_STACK, or starts its own with
// `themis stack up --dir <tmp>` and SIGTERMs it at the end.
func TestMain(m *testing.M) {
	path := os.Getenv("THEMIS_STACK")
	var own *exec.Cmd
	var ownDir string
	if path == "" && os.Getenv("THEMIS_NO_STACK") == "" {
		dir, err := os.MkdirTemp("", "themis-go-stack-")
		ownDir = dir
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		bin := os.Getenv("THEMIS_BIN")
		if bin == "" {
			bin = "themis"
			if _, err := os.Stat("../../.venv/bin/themis"); err == nil {
				bin, _ = filepath.Abs("../../.venv/bin/themis")
			}
		}
		own = exec.Command(bin, "stack", "up", "--dir", dir)
		own.Stdout, own.Stderr = os.Stderr, os.Stderr
		if err := own.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "starting the stack:", err)
			os.Exit(1)
		}
		path = filepath.Join(dir, "stack.json")
		deadline := time.Now().Add(180 * time.Second)
		for {
			if _, err := os.Stat(path); err == nil {
				break
			}
			if time.Now().After(deadline) {
				_ = own.Process.Signal(syscall.SIGTERM)
				fmt.Fprintln(os.Stderr, "no stack.json after 180 s")
				os.Exit(1)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if path != "" {
		s, err := readStack(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "reading", path, err)
			os.Exit(1)
		}
		live = s
	}
	code := m.Run()
	if own != nil {
		_ = own.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = own.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = own.Process.Kill()
		}
		_ = os.RemoveAll(ownDir)
	}
	os.Exit(code)
}

func needStack(t *testing.T) *stack {
	t.Helper()
	if live == nil {
		t.Skip("THEMIS_NO_STACK is set")
	}
	return live
}

func suffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// transports are the two doors, each with the writer key and the admin key.
type door struct {
	name  string
	conn  func(s *stack, key string) string
	extra func(s *stack) []themis.Option
}

var doors = []door{
	{"http", func(s *stack, key string) string { return "http::addr=" + s.HTTPAddr + ";api_key=" + key }, func(*stack) []themis.Option { return nil }},
	{"binary", func(s *stack, key string) string { return "themis::addr=" + s.BinaryAddr + ";api_key=" + key },
		func(s *stack) []themis.Option { return []themis.Option{themis.WithHTTPAddr(s.HTTPAddr)} }},
}

func newClient(t *testing.T, d door, role string, opts ...themis.Option) *themis.Client {
	t.Helper()
	s := needStack(t)
	c, err := themis.New(d.conn(s, s.Keys[role]), append(d.extra(s), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
