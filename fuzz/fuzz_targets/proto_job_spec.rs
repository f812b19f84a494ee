//! A job submission as the server takes it: arbitrary bytes decoded as an
//! rwp.v1 `SubmitJobRequest`, its spec converted to `rwp_spec::JobSpec` and
//! validated (the `SubmitJob` handler's path). Malformed input is an error
//! naming the field, never a panic; a valid spec's schedules and plan work
//! for any training set, and it re-encodes to the same spec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use rwp_proto::v1;
use rwp_spec::JobSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = v1::SubmitJobRequest::decode(data) else { return };
    let Some(wire) = request.spec else { return };
    let spec = match JobSpec::try_from(wire) {
        Ok(spec) => spec,
        Err(e) => {
            assert!(e.to_string().starts_with("spec."), "a conversion error does not name its field: {e}");
            return;
        }
    };
    if let Err(e) = spec.validate() {
        rwp_fuzz::check_spec_error(&e);
        return;
    }
    rwp_fuzz::check_crosses_the_wire(&spec);
    rwp_fuzz::check_valid_spec(&spec);
});
