//! Memory figures the examples report: the library's own measure.

pub use burn_lora::finetune::peak_rss_mib;
