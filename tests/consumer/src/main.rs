//! The README's "Use it as a dependency" program, word for word between the markers
//! (CI checks that they agree), run against the bundled model and data.

fn main() -> burn_lora::Result<()> {
    let out_dir = std::env::temp_dir().join(format!("burn-lora-consumer-{}", std::process::id()));
    // README: begin
    use burn_lora::{Classifier, Finetune};
    let device = burn_lora::device::parse_device("flex")?;
    Finetune::new("models/all-MiniLM-L6-v2", "data/debtags-min200")
        .train_limit(64).valid_limit(32).test_limit(32).epochs(1).batch_size(16).max_len(64).seed(3)
        .out(&out_dir)
        .run(&device)?;
    let clf = Classifier::load("models/all-MiniLM-L6-v2", out_dir.join("adapter"), &device)?;
    let preds = clf.predict(&["some text", "another text"])?;
    assert_eq!(preds[0].scores.len(), clf.labels().len());
    // README: end
    println!("{} labels; first text: {:?}", clf.labels().len(), preds[0].labels);
    std::fs::remove_dir_all(&out_dir).ok();
    Ok(())
}
