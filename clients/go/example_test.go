package themis_test

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestQuickstartExampleRunsOnBothDoors runs examples/quickstart as a user would.
func TestQuickstartExampleRunsOnBothDoors(t *testing.T) {
	s := needStack(t)
	bin := t.TempDir() + "/quickstart"
	if out, err := exec.Command("go", "build", "-o", bin, "./examples/quickstart").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, d := range doors {
		t.Run(d.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin)
			cmd.Env = append(os.Environ(), "THEMIS_CLIENT_CONF="+d.conn(s, s.Keys["writer"]),
				"THEMIS_HTTP_ADDR="+s.HTTPAddr, "THEMIS_VECTOR_DIMENSION="+strconv.Itoa(s.Dimension))
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("quickstart: %v\n%s", err, out)
			}
			for _, want := range []string{"stored 100 points", "found vector", "queued 100, sent 100, retried 0, failed 0"} {
				if !strings.Contains(string(out), want) {
					t.Fatalf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}
