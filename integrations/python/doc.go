// Package python holds gomerge.py, a standard-library Python module that lets a
// PyTorch, Hugging Face, Lightning or Composer training loop call the gomerge binary
// for Sequential Fine-tuning with Averaging, and the Go test that runs its Python tests
// against a freshly built gomerge. There is no Go API here.
package python
