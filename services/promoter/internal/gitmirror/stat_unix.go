//go:build linux || darwin || freebsd || netbsd || openbsd

package gitmirror

import (
	"io/fs"
	"syscall"
)

// fileStat is what tells a file changed without reading it.
type fileStat struct {
	size  int64
	mtime int64
	ctime int64
	ino   uint64
}

func statOf(fi fs.FileInfo) fileStat {
	st := fileStat{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ctime = ctimeOf(sys)
		st.ino = uint64(sys.Ino) //nolint:unconvert // the type differs by platform
	}
	return st
}
