//! TEMPORARY placeholder.
pub fn osb_signature(_secret: &[u8], _body: &[u8]) -> String {
    String::new()
}
pub fn standard_signature(_secret: &[u8], _id: &str, _ts: i64, _body: &[u8]) -> String {
    String::new()
}
