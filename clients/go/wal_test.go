package themis_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	themis "github.com/themisdb/go-client"
)

const primaryID = "go-client-tests"

func shipper(t *testing.T, s *stack, binary bool) *themis.WALShipperClient {
	t.Helper()
	r := s.Replica
	tlsKeys := ";tls_ca=" + r.CA + ";tls_cert=" + r.ClientCert + ";tls_key=" + r.ClientKey
	conn := "https::addr=" + strings.TrimPrefix(r.HTTPSURL, "https://") + tlsKeys
	var opts []themis.Option
	if binary {
		conn = "themis+tls::addr=" + r.BinaryAddr + tlsKeys
		opts = append(opts, themis.WithStatusAddr(strings.TrimPrefix(r.HTTPSURL, "https://")))
	}
	w, err := themis.NewWALShipperClient(conn, opts, themis.WithPrimaryID(primaryID), themis.WithWALCompression(themis.WALCodecZstd, 3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

// replicaHTTP is an mTLS client for the replica's read routes.
func replicaHTTP(t *testing.T, s *stack) *http.Client {
	t.Helper()
	ca, err := os.ReadFile(s.Replica.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(s.Replica.ClientCert, s.Replica.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}}
}

func replicaSearch(t *testing.T, s *stack, hc *http.Client, v []float32, k int) ([]themis.SearchHit, error) {
	body, _ := json.Marshal(map[string]any{"vector": v, "k": k})
	resp, err := hc.Post(s.Replica.HTTPSURL+"/vectors/search", "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out themis.SearchResult
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("replica search: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	return out.Results, nil
}

func replicaQuery(s *stack, hc *http.Client, q themis.Query) (*themis.QueryResult, error) {
	v := url.Values{"metric": {q.Metric}, "entity": {q.Entity}}
	for k, t := range q.Tags {
		v.Add("tag", k+":"+t)
	}
	resp, err := hc.Get(s.Replica.HTTPSURL + "/ts/query?" + v.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("replica query: HTTP %d", resp.StatusCode)
	}
	var out themis.QueryResult
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	return &out, nil
}

type hit struct {
	pk   string
	dist float64
}

func ours(hits []themis.SearchHit, prefix string) []hit {
	var out []hit
	for _, h := range hits {
		if strings.HasPrefix(h.PK, prefix) {
			out = append(out, hit{h.PK, h.Distance})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].dist < out[j].dist })
	return out
}

// TestShippedWALBatchMakesReplicaAnswerLikeThePrimary writes the same vectors and
// points through the facade and as WAL entries (VOF1 frames, a TGBK block) shipped
// by the Go client (HTTPS with a
// client certificate, then the binary door over TLS), starting one batch past
// the replica's next LSN so the gap answer is exercised, and compares searches.
func TestShippedWALBatchMakesReplicaAnswerLikeThePrimary(t *testing.T) {
	s := needStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	prefix := "go_wal_" + suffix() + "_"
	// Six vectors close to a random direction of this run, so that they are the
	// nearest to it among everything earlier runs shipped to the replica.
	center := make([]float32, s.Dimension)
	for j := range center {
		center[j] = float32(rand.NormFloat64())
	}
	var vecs []themis.Vector
	for i := 0; i < 6; i++ {
		v := make([]float32, s.Dimension)
		for j := range v {
			v[j] = center[j] + float32(0.05*math.Sin(float64(i*s.Dimension+j)+1))
		}
		vecs = append(vecs, themis.Vector{PK: fmt.Sprintf("%s%d", prefix, i), Vector: v, Metadata: map[string]any{"run": prefix}})
	}
	// The primary: the same vectors through the facade.
	c := newClient(t, doors[0], "admin")
	if err := c.Vectors.AddBatch(ctx, vecs); err != nil {
		t.Fatal(err)
	}
	hc := replicaHTTP(t, s)
	var series []themis.Query
	for round, binary := range []bool{false, true} {
		w := shipper(t, s, binary)
		st, err := w.ReplicaStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		next := st.ExpectedLSN
		var entries []themis.WALEntry
		// A TS block of a series the primary also gets through the facade.
		metric := prefix + "ts"
		entity := fmt.Sprintf("e%d", round)
		tags := map[string]string{"run": prefix}
		var samples []themis.Sample
		var points []themis.DataPoint
		base := time.Now().UnixMilli() - 60_000
		for i := 0; i < 50; i++ {
			ts, v := base+int64(i)*1000+int64(i%3), math.Round(math.Sin(float64(i))*1000)/10
			samples = append(samples, themis.Sample{TimestampMs: ts, Value: themis.Float(v)})
			points = append(points, themis.DataPoint{Metric: metric, Entity: entity, TimestampMs: ts, Value: v, Tags: tags})
		}
		if _, err := c.TimeSeries.PutBatchNow(ctx, points); err != nil {
			t.Fatal(err)
		}
		block, err := themis.EncodeTSBlock(metric, entity, tags, samples)
		if err != nil {
			t.Fatal(err)
		}
		series = append(series, themis.Query{Metric: metric, Entity: entity, Tags: tags})
		for i := 0; i < 3; i++ {
			v := vecs[round*3+i]
			frame, err := themis.EncodeVectorOpFrame(s.Dimension, []themis.VectorOp{{Op: themis.VectorOpAdd, PK: v.PK, Vector: v.Vector, Metadata: v.Metadata}})
			if err != nil {
				t.Fatal(err)
			}
			entries = append(entries, themis.WALEntry{LSN: next + uint64(i), Type: themis.WALEntryVectorBatch, TimestampMs: time.Now().UnixMilli(), Payload: frame})
		}
		entries = append(entries, themis.WALEntry{LSN: next + 3, Type: themis.WALEntryTSBlock, TimestampMs: time.Now().UnixMilli(), Payload: block})
		// A batch that starts after the replica's next LSN: the gap answer.
		b, err := w.BuildBatch(entries[1:])
		if err != nil {
			t.Fatal(err)
		}
		var gap *themis.WALGapError
		if err := w.ApplyWALBatch(ctx, b); !errors.As(err, &gap) || gap.ExpectedLSN != next || !gap.Retriable() {
			t.Fatalf("binary=%v: batch after a gap: %v, want a WALGapError expecting %d", binary, err, next)
		}
		// Ship starting past the gap: it rewinds to the expected LSN by itself.
		res, err := w.Ship(ctx, entries, next+1)
		if err != nil {
			t.Fatalf("binary=%v: ship: %v", binary, err)
		}
		if res.Rewinds != 1 || res.EntriesApplied != 4 || res.NextLSN != next+4 {
			t.Fatalf("binary=%v: ship result %+v", binary, res)
		}
		stats, err := w.GetReplicationStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if stats.Stats["total_entries_shipped"].(int64) != 4 || len(stats.Replicas) != 1 ||
			stats.Replicas[0]["expected_lsn"] != fmt.Sprintf("%016X", next+4) {
			t.Fatalf("replication stats %+v", stats)
		}
	}
	// Replica and primary answer the same queries of the shipped series.
	for _, q := range series {
		eventually(t, 30*time.Second, func() error {
			prim, err := c.TimeSeries.Query(ctx, q)
			if err != nil {
				return err
			}
			rep, err := replicaQuery(s, hc, q)
			if err != nil {
				return err
			}
			if prim.Count != 50 || rep.Count != 50 || prim.Series != rep.Series {
				return fmt.Errorf("primary %d points of %s, replica %d of %s", prim.Count, prim.Series, rep.Count, rep.Series)
			}
			for i := range prim.Points {
				if prim.Points[i] != rep.Points[i] {
					return fmt.Errorf("point %d: primary %+v, replica %+v", i, prim.Points[i], rep.Points[i])
				}
			}
			return nil
		})
	}
	// Replica and primary answer the same search over these vectors.
	probe := center
	eventually(t, 30*time.Second, func() error {
		prim, err := c.Vectors.Search(ctx, themis.SearchRequest{Vector: probe, K: len(vecs), Filter: map[string]any{"run": prefix}})
		if err != nil {
			return err
		}
		rep, err := replicaSearch(t, s, hc, probe, 100)
		if err != nil {
			return err
		}
		p, r := ours(prim.Results, prefix), ours(rep, prefix)
		if len(p) != len(vecs) || len(r) != len(vecs) {
			return fmt.Errorf("primary %d hits, replica %d, want %d", len(p), len(r), len(vecs))
		}
		for i := range p {
			if p[i].pk != r[i].pk || math.Abs(p[i].dist-r[i].dist) > 1e-5 {
				return fmt.Errorf("hit %d: primary %v, replica %v", i, p[i], r[i])
			}
		}
		return nil
	})
}
