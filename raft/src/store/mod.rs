//! placeholder until the RocksDB stores land
