package themis_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	themis "github.com/themisdb/go-client"
)

// TestReplicationControlOnBothDoors runs AddReplica, GetReplicationStats,
// ConfigureCompression and RemoveReplica against a facade of the test's own
// (the shared facade's shipper is left alone).
func TestReplicationControlOnBothDoors(t *testing.T) {
	s := needStack(t)
	if len(s.Themis) == 0 {
		t.Skip("stack.json names no themis command")
	}
	hp, bp := freePort(t), freePort(t)
	startFacade(t, s, hp, bp, t.TempDir())
	own := []door{
		{"http", func(s *stack, key string) string { return fmt.Sprintf("http::addr=127.0.0.1:%d;api_key=%s", hp, key) }, func(*stack) []themis.Option { return nil }},
		{"binary", func(s *stack, key string) string { return fmt.Sprintf("themis::addr=127.0.0.1:%d;api_key=%s", bp, key) },
			func(*stack) []themis.Option {
				return []themis.Option{themis.WithHTTPAddr(fmt.Sprintf("127.0.0.1:%d", hp))}
			}},
	}
	for _, d := range own {
		t.Run(d.name, func(t *testing.T) {
			c := newClient(t, d, "admin")
			ctx := ctxT(t, 60*time.Second)
			if err := c.Replication.ConfigureCompression(ctx, themis.CompressionConfig{CompressionType: "zstd", CompressionLevel: 5}); err != nil {
				t.Fatal(err)
			}
			var ve *themis.ValidationError
			if err := c.Replication.ConfigureCompression(ctx, themis.CompressionConfig{CompressionType: "lz4", CompressionLevel: 5}); !errors.As(err, &ve) || ve.Field != "compression_type" {
				t.Fatalf("lz4: %v", err)
			}
			id := "go-r-" + suffix()
			if err := c.Replication.AddReplica(ctx, id, "https://127.0.0.1:1"); err != nil {
				t.Fatal(err)
			}
			st, err := c.Replication.GetReplicationStats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, r := range st.Replicas {
				found = found || r["replica_id"] == id
			}
			if !found || st.Stats == nil {
				t.Fatalf("replica %s not in %+v", id, st)
			}
			if err := c.Replication.RemoveReplica(ctx, id); err != nil {
				t.Fatal(err)
			}
			var nf *themis.NotFoundError
			if err := c.Replication.RemoveReplica(ctx, id); !errors.As(err, &nf) {
				t.Fatalf("second remove: %v", err)
			}
		})
	}
}
