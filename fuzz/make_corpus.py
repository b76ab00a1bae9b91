#!/usr/bin/python3
"""Writes the fuzz targets' seed corpora, fuzz/corpus/<target>/, from the repo's examples and test
fixtures and a few hand-made files (valid inputs: libFuzzer mutates them into the bad ones).
Run from the repo root after building (the checkpoint seeds come from a real run):
    /usr/bin/python3 fuzz/make_corpus.py"""
import glob, gzip, os, shutil, struct, subprocess, tempfile, zipfile, io

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
corpus = os.path.join(root, 'fuzz', 'corpus')


def put(target, name, data):
    os.makedirs(os.path.join(corpus, target), exist_ok=True)
    with open(os.path.join(corpus, target, name), 'wb') as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def copy(target, pattern):
    for path in sorted(glob.glob(os.path.join(root, pattern))):
        put(target, os.path.basename(path), open(path, 'rb').read())


def idx(type_code, shape, payload):
    return bytes([0, 0, type_code, len(shape)]) + b''.join(struct.pack('>I', d) for d in shape) + payload


def npy(descr, shape, payload):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    header += ' ' * ((64 - (10 + len(header) + 1) % 64) % 64) + '\n'
    return b'\x93NUMPY\x01\x00' + struct.pack('<H', len(header)) + header.encode() + payload


if os.path.isdir(corpus):
    shutil.rmtree(corpus)

# IDX: images (ubyte, 3 dims), labels (1 dim), int32 and float32 arrays, a gzipped file.
images = idx(0x08, [2, 2, 2], bytes(range(8)))
put('idx', 'images_u8', images)
put('idx', 'labels_u8', idx(0x08, [3], bytes([0, 1, 9])))
put('idx', 'ints_i32', idx(0x0c, [2, 2], struct.pack('>4i', 1, -2, 3, -4)))
put('idx', 'floats_f32', idx(0x0d, [3], struct.pack('>3f', 0.5, -1.0, 2.0)))
put('idx', 'images_u8.gz', gzip.compress(images, mtime=0))

# CSV: classification (label), regression (y), CRLF line ends, several rows.
put('csv', 'classes.csv', 'a,b,label\n0.5,1,0\n-2,3e-2,1\n4,5,2\n')
put('csv', 'regression.csv', 'x1,x2,y\n1,2,0.5\n3,4,-1.25\n')
put('csv', 'crlf.csv', 'label,f\r\n1,0.25\r\n0,-0.5\r\n')
copy('csv', 'tests/fixtures/small.csv')

# NPY and NPZ: the readers' fixtures, and an int64 label array.
copy('npy', 'tests/fixtures/*.npy')
put('npy', 'labels_i8.npy', npy('<i8', '(3,)', struct.pack('<3q', 0, 4, 2)))
copy('npz', 'tests/fixtures/*.npz')
buf = io.BytesIO()
with zipfile.ZipFile(buf, 'w', zipfile.ZIP_DEFLATED) as z:
    z.writestr('x.npy', npy('<f4', '(2, 2)', struct.pack('<4f', 1, 2, 3, 4)))
    z.writestr('y.npy', npy('<i8', '(2,)', struct.pack('<2q', 0, 1)))
put('npz', 'deflated.npz', buf.getvalue())

# Jobs: the examples, and jobs on random data (whose models the target builds).
copy('job', 'examples/*.yaml')
put('job', 'random_mlp.yaml', 'model: {zoo: mlp, widths: [32, 16]}\n'
    'data: {dataset: random, shape: [16], samples: 64, num_classes: 5}\n'
    'training: {epochs: 2, batch_size: 16, optimizer: sgd, lr: 0.1, momentum: 0.9}\noutput: out\n')
put('job', 'random_lenet.yaml', 'model: {zoo: lenet, widths: [4, 8], hidden: 16}\n'
    'data: {dataset: random, shape: [1, 28, 28], samples: 32, num_classes: 10}\n'
    'training: {epochs: 1}\ncompression:\n  quantization_parameters: {default_weight_integer_bits: 1}\n')

# Compression configs of the three dialects: NNI and SparseML examples, PQuantML sections.
copy('config', 'examples/nni/*.yaml')
copy('config', 'examples/sparseml/*')
copy('config', 'tests/fixtures/sparseml/*')
put('config', 'pquant_pdp.yaml', 'pruning_parameters: {pruning_method: pdp, sparsity: 0.8, epsilon: 0.25}\n'
    'quantization_parameters: {default_weight_integer_bits: 1, default_weight_fractional_bits: 6,\n'
    '  layer_specific: {fc1: {input: {integer_bits: 0, fractional_bits: 8}}}}\n'
    'training_parameters: {pretraining_epochs: 2, epochs: 6, fine_tuning_epochs: 2}\n')
put('config', 'pquant_hgq.yaml', 'quantization_parameters: {use_high_granularity_quantization: true, hgq_gamma: 0.0003,\n'
    '  granularity: per_weight}\ntraining_parameters: {epochs: 4}\n')
put('config', 'nni_list.yaml', '- {op_types: [Linear], sparse_ratio: 0.5}\n- {op_names: [fc1], exclude: true}\n')

# Model YAML: the example and small graphs with every kind of node.
copy('model_yaml', 'examples/models/*.yaml')
put('model_yaml', 'conv.yaml', 'input_shape: [1, 8, 8]\nlayers:\n'
    '  - {name: c, op: Conv2d, out_channels: 4, kernel_size: 3, padding: 1}\n  - {op: BatchNorm2d}\n'
    '  - {op: ReLU}\n  - {op: MaxPool2d, kernel_size: 2}\n  - {op: flatten}\n  - {name: fc, op: Linear, out_features: 5}\n')
put('model_yaml', 'residual.yaml', 'layers:\n  - {name: a, op: Conv2d, out_channels: 1, kernel_size: 3, padding: 1}\n'
    '  - {name: s, op: add, inputs: [a, input]}\n  - {op: flatten, inputs: s}\n'
    '  - {op: Linear, out_features: 3}\noutput: 3\n')

# ONNX: the import fixtures (written by tests/fixtures/onnx/make_fixtures.py).
copy('onnx', 'tests/fixtures/onnx/*.onnx')

# Checkpoints of the target's model (mlp, widths [8], 16 features, 5 classes): with the checksum
# trailer and without it (as earlier versions wrote them).
with tempfile.TemporaryDirectory() as tmp:
    job = os.path.join(tmp, 'job.yaml')
    open(job, 'w').write('model: {zoo: mlp, widths: [8]}\n'
                         'data: {dataset: random, shape: [16], samples: 32, num_classes: 5}\n'
                         'training: {epochs: 1, batch_size: 16}\noutput: %s/run\n' % tmp)
    subprocess.run([os.path.join(root, 'build', 'sparq'), 'run', job], check=True, stdout=subprocess.DEVNULL)
    bytes_ = open(os.path.join(tmp, 'run', 'checkpoint.pt'), 'rb').read()
    put('checkpoint', 'mlp8.pt', bytes_)
    put('checkpoint', 'mlp8_no_checksum.pt', bytes_[:-20])

for target in sorted(os.listdir(corpus)):
    print(target, len(os.listdir(os.path.join(corpus, target))))
