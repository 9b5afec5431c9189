// Package hub turns a Hugging Face Hub model id (org/name, org/name@revision, or
// org/name/file.gguf for one file of a repository) into a local folder or file, through
// the cache that Python's huggingface_hub keeps, so that a cache filled by other tools
// is used as it is and what gomerge downloads is seen by them.
//
// The cache layout (HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE, else HF_HOME/hub, else
// $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub):
//
//	models--org--name/
//	  refs/main                       the commit a branch or tag points to
//	  blobs/<etag>                    file contents, named by sha256 (LFS) or git sha1
//	  snapshots/<commit>/<file>       relative symlinks to ../../blobs/<etag>
//	.locks/models--org--name/<etag>.lock
//
// When a needed file is missing and the client is not offline (HF_HUB_OFFLINE=1), it is
// downloaded from HF_ENDPOINT (default https://huggingface.co) with the token of HF_TOKEN
// (or the token file huggingface-cli writes): only the config, generation config,
// tokenizer files and the weights the index names; in parallel; resumed with Range
// requests from blobs/<etag>.incomplete; verified against the size and the sha256 (or
// git blob sha1) the Hub announces; renamed into blobs/ and linked into the snapshot
// only then. A lock file per blob makes two processes that fetch the same file at once
// write one copy.
//
// # Security
//
// The token is sent only to the endpoint's host, never to the host a download is
// redirected to, and never appears in messages. Everything the server says is checked
// before it names a file: commits must be 40 hex digits, etags 40 or 64, and file names
// relative paths without "..", so that no response writes outside the repository's
// cache folder. Response bodies are read with size limits. A file whose size or hash
// differs from the announced one is removed and never linked.
package hub
