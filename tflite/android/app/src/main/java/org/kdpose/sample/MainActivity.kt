package org.kdpose.sample

import android.Manifest
import android.content.pm.PackageManager
import android.graphics.Bitmap
import android.graphics.Matrix
import android.os.Bundle
import androidx.appcompat.app.AppCompatActivity
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.Preview
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.core.app.ActivityCompat
import androidx.core.content.ContextCompat
import java.util.concurrent.Executors

/** CameraX preview + analysis: each frame is centre-cropped to the model's aspect, scaled, run, drawn. */
class MainActivity : AppCompatActivity() {
    private lateinit var model: PoseModel
    private val executor = Executors.newSingleThreadExecutor()

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        model = PoseModel(this)
        if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
            startCamera()
        } else {
            ActivityCompat.requestPermissions(this, arrayOf(Manifest.permission.CAMERA), 1)
        }
    }

    override fun onRequestPermissionsResult(code: Int, perms: Array<out String>, results: IntArray) {
        super.onRequestPermissionsResult(code, perms, results)
        if (results.firstOrNull() == PackageManager.PERMISSION_GRANTED) startCamera() else finish()
    }

    private fun startCamera() {
        val previewView = findViewById<PreviewView>(R.id.preview)
        val overlay = findViewById<SkeletonView>(R.id.overlay)
        val future = ProcessCameraProvider.getInstance(this)
        future.addListener({
            val provider = future.get()
            val preview = Preview.Builder().build().also { it.setSurfaceProvider(previewView.surfaceProvider) }
            val analysis = ImageAnalysis.Builder()
                .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
                .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
                .build()
            analysis.setAnalyzer(executor) { image ->
                val frame = image.toBitmap()
                val rotated = Bitmap.createBitmap(frame, 0, 0, frame.width, frame.height,
                    Matrix().apply { postRotate(image.imageInfo.rotationDegrees.toFloat()) }, true)
                image.close()
                val info = model.info
                // centre crop to the model aspect ratio, then scale to the input size
                val aspect = info.inputWidth.toFloat() / info.inputHeight
                val cropW = minOf(rotated.width.toFloat(), rotated.height * aspect)
                val cropH = cropW / aspect
                val x0 = (rotated.width - cropW) / 2f
                val y0 = (rotated.height - cropH) / 2f
                val crop = Bitmap.createBitmap(rotated, x0.toInt(), y0.toInt(), cropW.toInt(), cropH.toInt())
                val input = Bitmap.createScaledBitmap(crop, info.inputWidth, info.inputHeight, true)
                val keypoints = model.run(input)
                // model pixels -> frame pixels -> view pixels (PreviewView FILL_CENTER scaling)
                val s = cropW / info.inputWidth
                val viewScale = maxOf(overlay.width / rotated.width.toFloat(), overlay.height / rotated.height.toFloat())
                val dx = (overlay.width - rotated.width * viewScale) / 2f
                val dy = (overlay.height - rotated.height * viewScale) / 2f
                overlay.update(keypoints, info.skeleton,
                    { x -> (x0 + x * s) * viewScale + dx }, { y -> (y0 + y * s) * viewScale + dy })
            }
            provider.unbindAll()
            provider.bindToLifecycle(this, CameraSelector.DEFAULT_BACK_CAMERA, preview, analysis)
        }, ContextCompat.getMainExecutor(this))
    }

    override fun onDestroy() {
        super.onDestroy()
        executor.shutdown()
        model.close()
    }
}
