package results

import "testing"

func TestRecordN(t *testing.T) {
	a, b := NewHistogram(), NewHistogram()
	for range 1000 {
		a.Record(5000)
	}
	a.Record(-3)
	b.RecordN(5000, 1000)
	b.RecordN(-3, 1)
	b.RecordN(7000, 0)
	b.RecordN(7000, -5)
	if a.Count() != b.Count() || a.Quantile(0.5) != b.Quantile(0.5) || a.Max() != b.Max() || a.Quantile(0.0005) != b.Quantile(0.0005) {
		t.Errorf("RecordN differs from repeated Record: count %d/%d, p50 %d/%d, max %d/%d",
			a.Count(), b.Count(), a.Quantile(0.5), b.Quantile(0.5), a.Max(), b.Max())
	}
	if b.Quantile(0.0005) != LowestNs {
		t.Errorf("negative value not clamped: min %d", b.Quantile(0.0005))
	}
}
