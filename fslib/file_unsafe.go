package fslib

import "unsafe"

// WriteString is Write of the bytes of s, without copying them: a libservices.FS
// only reads the buffer of a WriteAt (pwrite semantics) and keeps no reference to
// it after returning, so handing it the string's memory is safe.
func (f *File) WriteString(s string) (int, error) {
	return f.Write(unsafe.Slice(unsafe.StringData(s), len(s)))
}
