package memcopy

import "testing"

func TestOverlaps(t *testing.T) {
	buf := make([]byte, 100)
	for _, tc := range []struct {
		a, b []byte
		want bool
	}{
		{buf[0:10], buf[10:20], false},
		{buf[0:11], buf[10:20], true},
		{buf[10:20], buf[0:11], true},
		{buf[0:100], buf[50:51], true},
		{buf[5:5], buf[0:10], false},
		{nil, buf, false},
		{buf[:50], make([]byte, 50), false},
	} {
		if got := overlaps(tc.a, tc.b); got != tc.want {
			t.Errorf("overlaps(len %d, len %d) = %v, want %v", len(tc.a), len(tc.b), got, tc.want)
		}
	}
}
