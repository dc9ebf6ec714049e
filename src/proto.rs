//! The TensorFlow Serving gRPC API subset in `proto/`, compiled by build.rs.
#![allow(clippy::all, missing_docs)]

pub mod tensorflow {
    tonic::include_proto!("tensorflow");
    pub mod serving {
        tonic::include_proto!("tensorflow.serving");
    }
}

pub use tensorflow::serving;
