//! Tests of the Mermaid rendering.

use std::path::Path;

use super::*;

fn parse(yaml: &str) -> Descriptor {
    Descriptor::parse(yaml, Path::new("dataflow.yml")).expect("valid dataflow")
}

#[test]
fn renders_nodes_timers_and_edges() {
    let descriptor = parse(
        "\
nodes:
  - id: camera
    path: ./camera
    inputs:
      tick: adora/timer/millis/20
    outputs: [frames]
  - id: object-detector.v2
    path: ./detect
    inputs:
      image: camera/frames
      frames: { source: camera/frames, queue_size: 1 }
    outputs: [boxes]
  - id: plot
    path: ./plot
    inputs:
      boxes: object-detector.v2/boxes
      refresh: dora/timer/millis/20
      slow: adora/timer/hz/0.5
",
    );
    let expected = "\
flowchart TB
  camera[\"camera\"]
  object_detector_v2[\"object-detector.v2\"]
  plot[\"plot\"]
  timer_millis_20((\"adora/timer/millis/20\"))
  timer_hz_0_5((\"adora/timer/hz/0.5\"))
  timer_millis_20 -->|tick| camera
  camera -->|frames| object_detector_v2
  camera -->|frames as image| object_detector_v2
  object_detector_v2 -->|boxes| plot
  timer_millis_20 -->|refresh| plot
  timer_hz_0_5 -->|slow| plot
";
    assert_eq!(mermaid(&descriptor), expected);
}

#[test]
fn sanitised_names_stay_unique_and_avoid_keywords() {
    let descriptor = parse(
        "\
nodes:
  - { id: a.b, path: x, outputs: [o] }
  - { id: a_b, path: x, inputs: { o: a.b/o } }
  - { id: end, path: x, inputs: { o: a.b/o } }
  - { id: 1st, path: x }
",
    );
    let expected = "\
flowchart TB
  a_b[\"a.b\"]
  a_b_1[\"a_b\"]
  end_1[\"end\"]
  n1st[\"1st\"]
  a_b -->|o| a_b_1
  a_b -->|o| end_1
";
    assert_eq!(mermaid(&descriptor), expected);
}

#[test]
fn output_is_deterministic() {
    let yaml = "nodes:\n  - { id: a, path: x, outputs: [o], inputs: { t: adora/timer/secs/1 } }\n  - { id: b, path: x, inputs: { z: a/o, y: a/o, x: a/o } }\n";
    let first = mermaid(&parse(yaml));
    for _ in 0..10 {
        assert_eq!(mermaid(&parse(yaml)), first);
    }
    // Inputs are drawn in input-id order.
    assert!(first.ends_with("  a -->|o as x| b\n  a -->|o as y| b\n  a -->|o as z| b\n"));
}

#[test]
fn typed_edges_show_their_type() {
    let descriptor = parse(
        "\
nodes:
  - id: mic
    path: ./mic
    inputs:
      tick: dora/timer/millis/10
    input_types:
      tick: std/core/v1/UInt64
    outputs: [audio, level]
    output_types:
      audio: std/media/v1/AudioFrame[sample_type=f32]
  - id: sink
    path: ./sink
    inputs:
      sound: mic/audio
      level: mic/level
    input_types:
      level: std/core/v1/Float32
",
    );
    let expected = "\
flowchart TB
  mic[\"mic\"]
  sink[\"sink\"]
  timer_millis_10((\"adora/timer/millis/10\"))
  timer_millis_10 -->|\"tick: UInt64\"| mic
  mic -->|\"level: Float32\"| sink
  mic -->|\"audio as sound: AudioFrame[sample_type=f32]\"| sink
";
    assert_eq!(mermaid(&descriptor), expected);
}
