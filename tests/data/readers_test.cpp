// The IDX, CSV and NumPy readers, including every bad-file case: each error names the file and
// the position.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "sparq/data/dataset.h"
#include "sparq/error.h"
#include "test_util.h"

using namespace sparq;
using namespace sparq::data;
using sparq::test::fixture;
using sparq::test::TempDir;

namespace {

std::string idx_bytes(uint8_t type, std::vector<uint32_t> dims, const std::string& payload) {
  std::string s = {0, 0, static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) s += static_cast<char>((d >> shift) & 0xff);
  return s + payload;
}

void write_gzip(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

/// The message of the DataError that `fn` throws ("" if none is thrown).
template <typename Fn>
std::string data_error(Fn fn) {
  return test::error_of<DataError>(fn);
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST(Idx, ReadsRawAndGzipImagesWithLabels) {
  TempDir dir("idx");
  std::string pixels;
  for (int i = 0; i < 2 * 2 * 3; ++i) pixels += static_cast<char>(i * 10);
  auto images = idx_bytes(0x08, {2, 2, 3}, pixels);
  auto labels = idx_bytes(0x08, {2}, std::string("\x07\x02", 2));
  test::write_file(dir.file("img"), images);
  test::write_file(dir.file("lbl"), labels);
  write_gzip(dir.file("img.gz"), images);
  write_gzip(dir.file("lbl.gz"), labels);
  for (auto [img, lbl] : {std::pair{"img", "lbl"}, std::pair{"img.gz", "lbl.gz"}}) {
    auto ds = read_idx_pair(dir.file(img), dir.file(lbl));
    EXPECT_EQ(ds.x.sizes().vec(), (std::vector<int64_t>{2, 1, 2, 3}));  // channel axis added
    EXPECT_EQ(ds.x[1][0][1][2].item<float>(), 110.f);
    EXPECT_EQ(ds.y[0].item<int64_t>(), 7);
    EXPECT_EQ(ds.y.scalar_type(), torch::kInt64);
    EXPECT_EQ(ds.num_classes, 10);
  }
}

TEST(Idx, MultiByteTypesAreBigEndian) {
  TempDir dir("idx");
  test::write_file(dir.file("i16"), idx_bytes(0x0B, {2}, std::string("\x01\x02\xff\xfe", 4)));
  auto t = read_idx(dir.file("i16"));
  EXPECT_EQ(t.scalar_type(), torch::kInt16);
  EXPECT_EQ(t[0].item<int64_t>(), 258);
  EXPECT_EQ(t[1].item<int64_t>(), -2);
  test::write_file(dir.file("f32"), idx_bytes(0x0D, {1}, std::string("\x3f\xc0\x00\x00", 4)));
  EXPECT_EQ(read_idx(dir.file("f32"))[0].item<float>(), 1.5f);
}

TEST(Idx, BadFilesNameFileAndPosition) {
  TempDir dir("idx");
  auto missing = dir.file("nope.gz");
  EXPECT_EQ(data_error([&] { read_idx(missing); }), missing + ": does not exist");

  test::write_file(dir.file("magic"), std::string("\x12\x34\x08\x01rest", 8));
  EXPECT_NE(data_error([&] { read_idx(dir.file("magic")); }).find("magic: byte 0: wrong magic 12 34 08 01"),
            std::string::npos);

  test::write_file(dir.file("type"), idx_bytes(0x07, {1}, "x"));
  EXPECT_NE(data_error([&] { read_idx(dir.file("type")); }).find("byte 2: unknown IDX type code 0x07"),
            std::string::npos);

  // 2x3 bytes declared, 4 present: truncated at byte 8 + 4 = 12, needs 14.
  test::write_file(dir.file("short"), idx_bytes(0x08, {2, 3}, "abcd"));
  EXPECT_NE(data_error([&] { read_idx(dir.file("short")); })
                .find("short: truncated at byte 16: shape [2, 3] needs 18 bytes"),
            std::string::npos);

  test::write_file(dir.file("header"), std::string("\x00\x00\x08\x03\x00\x00", 6));
  EXPECT_NE(data_error([&] { read_idx(dir.file("header")); }).find("truncated at byte 6"), std::string::npos);

  test::write_file(dir.file("long"), idx_bytes(0x08, {2}, "abcd"));
  EXPECT_NE(data_error([&] { read_idx(dir.file("long")); }).find("long: byte 10: 2 bytes after the data"),
            std::string::npos);

  // A gzip stream cut in the middle.
  std::string payload(5000, '\x01');
  write_gzip(dir.file("full.gz"), idx_bytes(0x08, {5000}, payload));
  auto gz = file_bytes(dir.file("full.gz"));
  test::write_file(dir.file("cut.gz"), gz.substr(0, gz.size() / 2));
  EXPECT_NE(data_error([&] { read_idx(dir.file("cut.gz")); }).find("truncated"), std::string::npos);
}

TEST(Idx, PairChecksCountsAndLabelRange) {
  TempDir dir("idx");
  test::write_file(dir.file("img"), idx_bytes(0x08, {3, 2, 2}, std::string(12, '\x05')));
  test::write_file(dir.file("lbl2"), idx_bytes(0x08, {2}, std::string("\x01\x02", 2)));
  test::write_file(dir.file("lbl_bad"), idx_bytes(0x08, {3}, std::string("\x01\x0c\x02", 3)));
  EXPECT_NE(data_error([&] { read_idx_pair(dir.file("img"), dir.file("lbl2")); })
                .find("img: 3 images but " + dir.file("lbl2") + " has 2 labels"),
            std::string::npos);
  EXPECT_EQ(data_error([&] { read_idx_pair(dir.file("img"), dir.file("lbl_bad")); }),
            dir.file("lbl_bad") + ": label 12 at index 1 is out of range 0..9");
}

TEST(Idx, FashionMnistFromTheDebianPackage) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(dir + "/t10k-images-idx3-ubyte.gz")) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  auto ds = read_idx_pair(dir + "/t10k-images-idx3-ubyte.gz", dir + "/t10k-labels-idx1-ubyte.gz");
  EXPECT_EQ(ds.x.sizes().vec(), (std::vector<int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(ds.x.max().item<float>(), 255.f);
  // The test set is balanced: 1000 images per class.
  EXPECT_TRUE(torch::bincount(ds.y).eq(1000).all().item<bool>());
}

TEST(Csv, ReadsFeaturesAndNamedTarget) {
  auto ds = read_csv(fixture("small.csv"), "label", Task::Classification);
  EXPECT_EQ(ds.x.sizes().vec(), (std::vector<int64_t>{3, 2}));
  EXPECT_FLOAT_EQ(ds.x[1][0].item<float>(), -1.5f);
  EXPECT_FLOAT_EQ(ds.x[1][1].item<float>(), 0.2f);
  EXPECT_EQ(ds.y[1].item<int64_t>(), 2);
  EXPECT_EQ(ds.num_classes, 3);
  auto reg = read_csv(fixture("small.csv"), "f1", Task::Regression);
  EXPECT_EQ(reg.y.scalar_type(), torch::kFloat32);
  EXPECT_FLOAT_EQ(reg.y[2].item<float>(), 3.f);
}

TEST(Csv, BadFilesNameLineAndColumn) {
  TempDir dir("csv");
  EXPECT_EQ(data_error([&] { read_csv(dir.file("none.csv"), "label", Task::Classification); }),
            dir.file("none.csv") + ": does not exist");
  EXPECT_NE(data_error([&] { read_csv(fixture("small.csv"), "target", Task::Classification); })
                .find("small.csv:1: no column 'target' in the header (columns: f1, f2, label)"),
            std::string::npos);
  test::write_file(dir.file("text.csv"), "a,b,label\n1,2,0\n3,x7,1\n");
  EXPECT_EQ(data_error([&] { read_csv(dir.file("text.csv"), "label", Task::Classification); }),
            dir.file("text.csv") + ":3: column 2 ('b'): 'x7' is not a number");
  test::write_file(dir.file("cells.csv"), "a,b,label\n1,2,0\n3,1\n");
  EXPECT_EQ(data_error([&] { read_csv(dir.file("cells.csv"), "label", Task::Classification); }),
            dir.file("cells.csv") + ":3: 2 cells, but the header has 3 columns");
  test::write_file(dir.file("range.csv"), "a,label\n1,0\n2,4\n");
  EXPECT_EQ(data_error([&] { read_csv(dir.file("range.csv"), "label", Task::Classification, 3); }),
            dir.file("range.csv") + ":3: column 2 ('label'): label 4 is not a class index (0..2)");
  test::write_file(dir.file("frac.csv"), "a,label\n1,0.5\n");
  EXPECT_NE(data_error([&] { read_csv(dir.file("frac.csv"), "label", Task::Classification); })
                .find("frac.csv:2: column 2 ('label'): label 0.5 is not a class index"),
            std::string::npos);
  test::write_file(dir.file("empty.csv"), "a,label\n");
  EXPECT_NE(data_error([&] { read_csv(dir.file("empty.csv"), "label", Task::Classification); })
                .find("no data rows"),
            std::string::npos);
}

TEST(Npy, ReadsEveryDtypeInCOrder) {
  auto x = read_npy(fixture("x_f32.npy"));
  EXPECT_EQ(x.scalar_type(), torch::kFloat32);
  EXPECT_EQ(x.sizes().vec(), (std::vector<int64_t>{4, 3}));
  EXPECT_FLOAT_EQ(x[2][1].item<float>(), 7.f / 4);
  EXPECT_TRUE(read_npy(fixture("x_f64.npy")).to(torch::kFloat32).equal(x));
  auto y = read_npy(fixture("y_i64.npy"));
  EXPECT_EQ(y.scalar_type(), torch::kInt64);
  EXPECT_TRUE(read_npy(fixture("y_u8.npy")).to(torch::kInt64).equal(y));
  EXPECT_TRUE(read_npy(fixture("y_i32.npy")).to(torch::kInt64).equal(y));
  auto u16 = read_npy(fixture("x_u16.npy"));
  EXPECT_EQ(u16[1][2].item<int64_t>(), 5000);
}

TEST(Npy, BadFiles) {
  TempDir dir("npy");
  EXPECT_NE(data_error([&] { read_npy(fixture("x_fortran.npy")); }).find("Fortran-order arrays are not supported"),
            std::string::npos);
  test::write_file(dir.file("magic.npy"), "PK\x03\x04 not numpy at all");
  EXPECT_EQ(data_error([&] { read_npy(dir.file("magic.npy")); }),
            dir.file("magic.npy") + ": byte 0: wrong magic, expected \\x93NUMPY");
  auto bytes = file_bytes(fixture("x_f32.npy"));
  test::write_file(dir.file("cut.npy"), bytes.substr(0, bytes.size() - 5));
  EXPECT_EQ(data_error([&] { read_npy(dir.file("cut.npy")); }),
            dir.file("cut.npy") + ": truncated at byte 171: shape (4, 3) of '<f4' needs 176 bytes");
  test::write_file(dir.file("long.npy"), bytes + "xx");
  EXPECT_NE(data_error([&] { read_npy(dir.file("long.npy")); }).find("byte 176: 2 bytes after the data"),
            std::string::npos);
  EXPECT_NE(data_error([&] { read_npy(dir.file("none.npy")); }).find("does not exist"), std::string::npos);
}

TEST(Npz, StoredAndDeflatedArchives) {
  auto x = read_npy(fixture("x_f32.npy"));
  for (const char* name : {"xy.npz", "xy_compressed.npz"}) {
    auto arrays = read_npz(fixture(name));
    ASSERT_TRUE(arrays.count("x")) << name;
    EXPECT_TRUE(arrays["x"].equal(x)) << name;
    EXPECT_EQ(arrays["y"][3].item<int64_t>(), 1) << name;
  }
  EXPECT_EQ(read_npz(fixture("xy_compressed.npz"))["extra"].sizes().vec(), (std::vector<int64_t>{2, 2, 2}));
  TempDir dir("npz");
  auto bytes = file_bytes(fixture("xy.npz"));
  test::write_file(dir.file("cut.npz"), bytes.substr(0, bytes.size() / 2));
  EXPECT_NE(data_error([&] { read_npz(dir.file("cut.npz")); }).find("not a zip archive"), std::string::npos);
}

TEST(MakeDataset, ChecksRowsAndLabels) {
  EXPECT_EQ(data_error([] { make_dataset(torch::zeros({3, 2}), torch::zeros({2}), Task::Classification, 0, "src"); }),
            "src: 3 feature rows but 2 targets");
  EXPECT_EQ(data_error([] { make_dataset(torch::zeros({2, 2}), torch::tensor({0, -1}), Task::Classification, 0, "src"); }),
            "src: label -1 at index 1 is out of range 0..0");
  EXPECT_EQ(data_error([] { make_dataset(torch::zeros({2, 2}), torch::tensor({0.0, 1.5}), Task::Classification, 0, "src"); }),
            "src: label 1.5 at index 1 is not an integer class");
}

TEST(Readers, NonFiniteFeaturesAndTargetsAreRejectedAtLoad) {
  auto x = torch::rand({6, 3});
  x[4][1] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(data_error([&] { make_dataset(x, torch::zeros({6}, torch::kInt64), Task::Classification, 2, "y.npy", "x.npy"); }),
            "x.npy: feature inf at sample 4, position 1 is not a finite number");
  auto y = torch::rand({6});
  y[2] = std::nan("");
  EXPECT_EQ(data_error([&] { make_dataset(torch::rand({6, 3}), y, Task::Regression, 0, "t.csv"); }),
            "t.csv: target nan at sample 2, position 0 is not a finite number");
  // float64 values beyond float32's range become inf when stored: also refused.
  auto big = torch::full({2, 2}, 1e300, torch::kFloat64);
  EXPECT_NE(data_error([&] { make_dataset(big, torch::zeros({2}, torch::kInt64), Task::Classification, 2, "b.npy"); })
                .find("b.npy: feature inf at sample 0, position 0"),
            std::string::npos);
}

TEST(Readers, SilentAcceptancesAreErrors) {
  test::TempDir dir("silent");
  // CSV: a column twice, a NUL byte in a cell.
  test::write_file(dir.file("twice.csv"), "a,label,label\n1,0,1\n");
  EXPECT_EQ(data_error([&] { read_csv(dir.file("twice.csv"), "label", Task::Classification); }),
            dir.file("twice.csv") + ":1: column 'label' appears twice (columns 2 and 3)");
  test::write_file(dir.file("nul.csv"), std::string("a,label\n1,0\n2\0x,1\n", 16));
  EXPECT_EQ(data_error([&] { read_csv(dir.file("nul.csv"), "label", Task::Classification); }),
            dir.file("nul.csv") + ":3: a NUL byte at column 2 of the line");
  // NPY: a header that is not a terminated dict.
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,";
  header.append(64 - 10 - header.size() - 1, ' ');
  header += '\n';
  std::string npy = std::string("\x93NUMPY\x01\x00", 8) + char(header.size()) + char(0) + header + std::string(8, '\0');
  test::write_file(dir.file("open.npy"), npy);
  EXPECT_NE(data_error([&] { read_npy(dir.file("open.npy")); }).find("the header is not a terminated dict"), std::string::npos);
  // NPZ: a wrong CRC, the encryption flag, a declared size deflate cannot give.
  const std::string good = test::read_text(test::fixture("xy_compressed.npz"));
  auto patched = [&](size_t field, uint32_t value, const std::string& name) {
    std::string z = good;
    size_t dir_at = z.find(std::string("PK\x01\x02", 4));
    for (int b = 0; b < (field == 8 ? 2 : 4); ++b) z[dir_at + field + b] = static_cast<char>((value >> (8 * b)) & 0xff);
    test::write_file(dir.file(name), z);
    return dir.file(name);
  };
  auto crc = patched(16, 0x12345678, "crc.npz");
  EXPECT_NE(data_error([&] { read_npz(crc); }).find("CRC mismatch: the member is damaged"), std::string::npos);
  auto locked = patched(8, 1, "locked.npz");
  EXPECT_NE(data_error([&] { read_npz(locked); }).find("the member is encrypted"), std::string::npos);
  auto bomb = patched(24, 0xF0000000u, "bomb.npz");  // 4 GB from a few hundred bytes
  EXPECT_NE(data_error([&] { read_npz(bomb); }).find("more than deflate can give"), std::string::npos);
}
