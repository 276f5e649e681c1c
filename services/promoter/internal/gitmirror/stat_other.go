//go:build !linux && !darwin && !freebsd && !netbsd && !openbsd

package gitmirror

import "io/fs"

// fileStat is what tells a file changed without reading it.
type fileStat struct {
	size  int64
	mtime int64
	ctime int64
	ino   uint64
}

func statOf(fi fs.FileInfo) fileStat {
	return fileStat{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
}
