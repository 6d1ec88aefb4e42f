package results

// RecordN adds n occurrences of one latency, clamped like Record. External
// programs (fio, db_bench) report bucketed histograms; recording a bucket at once
// keeps importing them linear in the number of buckets, not of operations.
func (h *Histogram) RecordN(ns, n int64) {
	if n <= 0 {
		return
	}
	ns = min(max(ns, LowestNs), HighestNs)
	_ = h.h.RecordValues(ns, n)
}
