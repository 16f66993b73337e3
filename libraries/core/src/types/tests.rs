use arrow_schema::DataType;

use super::*;

#[test]
fn every_standard_type_parses_and_has_an_arrow_type() {
    for t in STD_TYPES {
        let urn = TypeUrn::parse(t.urn).expect("standard URNs are valid");
        assert_eq!(urn.to_string(), t.urn);
        assert_eq!(arrow_type(t.urn), Some(t.arrow_type()));
        assert!(!t.description.is_empty());
    }
    assert_eq!(arrow_type("std/core/v1/Float32"), Some(DataType::Float32));
    assert_eq!(arrow_type("std/core/v1/Bytes"), Some(DataType::LargeBinary));
    assert_eq!(arrow_type("std/core/v1/String"), Some(DataType::Utf8));
    assert_eq!(arrow_type("std/nope/v1/Thing"), None);
    let Some(DataType::Struct(fields)) = arrow_type("std/media/v1/AudioFrame[sample_type=f32]")
    else {
        panic!("AudioFrame is a struct");
    };
    assert!(fields.iter().any(|f| f.name() == "sample_rate"));
}

#[test]
fn urns_with_parameters() {
    let urn =
        TypeUrn::parse("std/media/v1/AudioFrame[sample_type=f32, channels=2]").expect("valid URN");
    assert_eq!(urn.base, "std/media/v1/AudioFrame");
    assert_eq!(urn.params.len(), 2);
    assert_eq!(
        urn.to_string(),
        "std/media/v1/AudioFrame[channels=2,sample_type=f32]"
    );
    assert_eq!(urn.short_name(), "AudioFrame");
    for bad in [
        "",
        "Image",
        "std/media/Image",
        "std/media/1/Image",
        "std/media/v1/Image[",
        "std/media/v1/Image[encoding]",
        "std/media/v1/Image[a=1,a=2]",
        "my project/X",
    ] {
        assert!(TypeUrn::parse(bad).is_err(), "accepted `{bad}`");
    }
    assert!(TypeUrn::parse("myproject/sensors/v1/Reading").is_ok());
}

#[test]
fn compatibility_rules() {
    let t = |s: &str| TypeUrn::parse(s).expect("valid URN");
    let none: &[(String, String)] = &[];
    assert!(t("std/core/v1/UInt8").compatible_with(&t("std/core/v1/UInt64"), none));
    assert!(!t("std/core/v1/UInt64").compatible_with(&t("std/core/v1/UInt8"), none));
    assert!(!t("std/core/v1/Int32").compatible_with(&t("std/core/v1/Float64"), none));
    assert!(t("std/math/v1/Pose").compatible_with(&t("std/core/v1/Bytes"), none));
    let rules = [
        ("a/v1/A".to_owned(), "a/v1/B".to_owned()),
        ("a/v1/B".to_owned(), "a/v1/C".to_owned()),
        ("a/v1/C".to_owned(), "a/v1/D".to_owned()),
        ("a/v1/D".to_owned(), "a/v1/E".to_owned()),
    ];
    assert!(t("a/v1/A").compatible_with(&t("a/v1/D"), &rules));
    assert!(
        !t("a/v1/A").compatible_with(&t("a/v1/E"), &rules),
        "at most 3 steps"
    );
}
